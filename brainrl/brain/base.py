"""The BrainModel interface: stimuli in, predicted cortical maps (T x 20,484 on fsaverage5) out."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from brainrl.registry import Registry
from brainrl.stimulus import Stimulus

N_VERTICES = 20484  # fsaverage5: 10,242 per hemisphere, left first
N_VERTICES_HEMI = 10242
TR_SECONDS = 1.0
# Batch invariance: a map depends on its stimulus and the model's identity, not on its batch-mates, the
# batch size or the process -- up to float32 rounding (batched matmuls may sum in another order). Maps
# compared across batches or processes agree within these tolerances; the cache relies on that promise.
MAP_RTOL = 1e-5
MAP_ATOL = 1e-6


@dataclass
class BrainMap:
    """Predicted activity, ``data`` of shape (T, 20,484) float32 at one frame per ``tr`` seconds.

    ``provenance`` says where it came from: model id, revision or seed, speech engine and its version,
    library versions, and whether the stimulus text was truncated.
    """

    data: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    tr: float = TR_SECONDS
    space: str = "fsaverage5"

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim != 2 or data.shape[1] != N_VERTICES:
            raise ValueError(f"BrainMap data must be (T, {N_VERTICES}); got {data.shape}.")
        if data.shape[0] < 1:
            raise ValueError("BrainMap needs at least one frame.")
        self.data = data.astype(np.float32, copy=False)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    def mean_map(self) -> np.ndarray:
        """Time-averaged map, (20,484,)."""
        return self.data.mean(axis=0)

    def region_means(self, weights: np.ndarray) -> np.ndarray:
        """The time-averaged map times ``weights`` (20,484,) or (20,484, n), in float64: with an averaging
        matrix (``brainrl.cortex.stats.averaging_matrix``), each region's mean over its vertices and the
        frames. Maps held on a basis (``brainrl.brain.lowrank.LowRankMap``) answer without building the map."""
        return mean_frame_float64(self.data) @ weights


def mean_frame_float64(data: np.ndarray) -> np.ndarray:
    """The mean over frames of a (T, 20,484) array, in float64 (a one-frame array is only cast)."""
    return data[0].astype(np.float64) if data.shape[0] == 1 else data.mean(axis=0, dtype=np.float64)


@dataclass(frozen=True)
class Failed:
    """An item a model could not predict, with the reason (never a silent zero)."""

    reason: str

    def __bool__(self) -> bool:  # so `if prediction:` skips failures
        return False


Prediction = BrainMap | Failed


class BrainModel(abc.ABC):
    """Predicts cortical maps for a batch of stimuli at once.

    ``predict`` returns one entry per stimulus, in order: a ``BrainMap``, or ``Failed`` for an item that
    could not be predicted (a remote worker that died, say). Local models raise on misuse.
    """

    #: registry name, e.g. "synthetic" or "tribe"
    name: str = "brain-model"

    @abc.abstractmethod
    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        """Predict one map per stimulus, batching internally."""

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything about the model that changes a result (id, revision or seed, settings), JSON-able.
        It goes into every cache key and every BrainMap's provenance."""

    def close(self) -> None:
        """Release workers, servers or devices. Safe to call twice."""


BRAIN_MODELS: Registry[BrainModel] = Registry("brain model")
