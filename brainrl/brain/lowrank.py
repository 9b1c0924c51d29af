"""Maps held as coefficients on a fixed basis (``map = mean + coefficients @ components``), built on demand.

Why: the distilled surrogate (brainrl/brain/surrogate.py) predicts a few dozen PCA coefficients per text.
Writing them out as 20,484 vertices costs more than predicting them, and a reward that averages over
regions throws the vertices away again. A ``LowRankMap`` keeps the coefficients; ``region_means`` reads
weighted vertex averages straight from them (``mean @ W + coefficients @ (components @ W)``, with
``components @ W`` computed once per basis and weight matrix), and ``data`` builds the full map the first
time something asks for it, so rewards that need every vertex work unchanged.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from brainrl.brain.base import N_VERTICES, TR_SECONDS, BrainMap

#: weight matrices whose projections a basis keeps (a few rewards per process, each with its own matrix)
PROJECTIONS_KEPT = 16


class MapBasis:
    """A map basis: ``mean`` (20,484,) and ``components`` (k, 20,484), float32."""

    def __init__(self, mean: np.ndarray, components: np.ndarray):
        mean = np.ascontiguousarray(mean, dtype=np.float32)
        components = np.ascontiguousarray(components, dtype=np.float32)
        if mean.shape != (N_VERTICES,) or components.ndim != 2 or components.shape[1] != N_VERTICES:
            raise ValueError(f"A map basis needs mean ({N_VERTICES},) and components (k, {N_VERTICES}); got "
                             f"{mean.shape} and {components.shape}.")
        self.mean = mean
        self.components = components
        # id(weights) -> (weights, mean @ weights, components @ weights); holding weights keeps its id unique
        self._projections: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def maps(self, coefficients: np.ndarray) -> np.ndarray:
        """(B, 20,484) float32 maps from (B, k) coefficients."""
        return self.mean + np.asarray(coefficients).astype(np.float32) @ self.components

    def projection(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean @ weights, components @ weights)`` in float64, computed once per weight matrix (the same
        array object: build the matrix once and reuse it, as ``ROIReward`` does)."""
        entry = self._projections.get(id(weights))
        if entry is None or entry[0] is not weights:
            w = np.asarray(weights, dtype=np.float64)
            if w.ndim not in (1, 2) or w.shape[0] != N_VERTICES:
                raise ValueError(f"weights must be ({N_VERTICES},) or ({N_VERTICES}, n); got {w.shape}.")
            entry = (weights, self.mean.astype(np.float64) @ w, self.components.astype(np.float64) @ w)
            with self._lock:
                if len(self._projections) >= PROJECTIONS_KEPT:
                    self._projections.clear()
                self._projections[id(weights)] = entry
        return entry[1], entry[2]

    def region_means(self, coefficients: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``maps(coefficients) @ weights`` in float64 without building the maps: (..., n)."""
        offset, projected = self.projection(weights)
        return offset + np.asarray(coefficients, dtype=np.float64) @ projected


class LowRankMap(BrainMap):
    """A one-frame ``BrainMap`` (a time-averaged map) held as coefficients on a ``MapBasis``.

    ``region_means`` never builds the 20,484 vertices; ``data`` builds them once, on first use. Pickled,
    it becomes a plain ``BrainMap`` (the basis stays with the model that made it)."""

    def __init__(self, coefficients: np.ndarray, basis: MapBasis, provenance: dict[str, Any] | None = None,
                 tr: float = TR_SECONDS, space: str = "fsaverage5"):
        coefficients = np.asarray(coefficients)
        if coefficients.shape != (basis.k,):
            raise ValueError(f"LowRankMap needs {basis.k} coefficients for its basis, got shape {coefficients.shape}.")
        self.coefficients = coefficients
        self.basis = basis
        self.provenance = {} if provenance is None else provenance
        self.tr = tr
        self.space = space
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:  # type: ignore[override]
        if self._data is None:
            self._data = self.basis.maps(self.coefficients[None, :])
        return self._data

    @property
    def n_frames(self) -> int:
        return 1

    def mean_map(self) -> np.ndarray:
        return self.data[0]

    def region_means(self, weights: np.ndarray) -> np.ndarray:
        return self.basis.region_means(self.coefficients, weights)

    def __reduce__(self):
        return (BrainMap, (self.data, self.provenance, self.tr, self.space))
