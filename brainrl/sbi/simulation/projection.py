"""The fixed brain-sequence projection: pad/truncate to T_max, vertex-wise standardise, PCA to k.

Because it is fixed (not trained), it gives the same result before storage as inside the network
(libraries.md, design note), so campaigns store T_max×k coefficients instead of T×20,484 frames:
10k items × 48 × 20,484 float32 is 39 GB raw, 1.6 GB at k = 512. The basis is fitted once per
campaign and saved beside the dataset; the posterior carries a copy so raw ``BrainMap``s can be
projected at inference time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainrl.provenance import content_hash

T_MAX = 48
PROJECTION_FILE = "projection.npz"


@dataclass
class Projection:
    """``coeffs = ((x - mean) / std) @ components.T`` per frame, for the first ``t_max`` frames."""

    mean: np.ndarray  # (V,)
    std: np.ndarray  # (V,)
    components: np.ndarray  # (k, V), orthonormal rows
    t_max: int = T_MAX
    explained_variance_ratio: np.ndarray | None = None  # (k,)
    n_fit_frames: int = 0

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.components.shape[1])

    def project_frames(self, frames: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(T, V) frames → ((t_max, k) coefficients zero-padded, valid frames, frames before truncation)."""
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.n_vertices:
            raise ValueError(f"frames must be (T, {self.n_vertices}); got {frames.shape}.")
        n_total = frames.shape[0]
        n_valid = min(n_total, self.t_max)
        out = np.zeros((self.t_max, self.k), dtype=np.float32)
        if n_valid:
            z = (frames[:n_valid] - self.mean) / self.std
            out[:n_valid] = z @ self.components.T
        return out, n_valid, n_total

    def project_many(self, sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """List of (T_i, V) → (n, t_max, k) coefficients and an (n, t_max) float32 mask of valid frames."""
        coeffs = np.zeros((len(sequences), self.t_max, self.k), dtype=np.float32)
        mask = np.zeros((len(sequences), self.t_max), dtype=np.float32)
        for i, seq in enumerate(sequences):
            coeffs[i], n_valid, _ = self.project_frames(seq)
            mask[i, :n_valid] = 1.0
        return coeffs, mask

    def fingerprint(self) -> str:
        return content_hash({"k": self.k, "t_max": self.t_max, "v": self.n_vertices,
                             "c": float(np.sum(self.components[:, :64] ** 3)), "m": float(self.mean.sum())}, 16)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PROJECTION_FILE
        tmp = folder / f".{PROJECTION_FILE}.tmp.npz"
        np.savez(tmp, mean=self.mean, std=self.std, components=self.components, t_max=self.t_max,
                 explained_variance_ratio=self.explained_variance_ratio if self.explained_variance_ratio is not None
                 else np.zeros(0), n_fit_frames=self.n_fit_frames)
        tmp.replace(path)  # atomic: a reader sees the old file or the whole new one
        (folder / "projection.json").write_text(json.dumps(self.describe(), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Projection":
        path = Path(folder)
        path = path if path.suffix == ".npz" else path / PROJECTION_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no projection basis at {path}; a campaign writes one in <campaign>/projection/.")
        with np.load(path) as f:
            evr = f["explained_variance_ratio"]
            return cls(mean=f["mean"].astype(np.float32), std=f["std"].astype(np.float32),
                       components=f["components"].astype(np.float32), t_max=int(f["t_max"]),
                       explained_variance_ratio=evr if evr.size else None, n_fit_frames=int(f["n_fit_frames"]))

    def describe(self) -> dict[str, Any]:
        evr = self.explained_variance_ratio
        return {"k": self.k, "t_max": self.t_max, "n_vertices": self.n_vertices, "n_fit_frames": self.n_fit_frames,
                "explained_variance": float(evr.sum()) if evr is not None else None,
                "fingerprint": self.fingerprint(),
                "method": "vertex-wise z-score (fit-frame mean/std), then PCA (SVD) of the z-scored frames"}


def fit_projection(frames: np.ndarray, k: int, t_max: int = T_MAX, max_frames: int = 20000,
                   seed: int = 0) -> Projection:
    """Fit mean/std and a k-component PCA basis on (N, V) frames (subsampled to ``max_frames``)."""
    import torch

    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"frames must be (N, V); got {frames.shape}.")
    if frames.shape[0] > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(frames.shape[0], max_frames, replace=False))
        frames = frames[keep]
    n, v = frames.shape
    if not 1 <= k <= min(n - 1, v):
        raise ValueError(f"PCA k={k} needs 1 <= k <= min(frames - 1, vertices) = {min(n - 1, v)}; "
                         "lower projection.k or fit the basis on more frames (a larger first shard).")
    mean = frames.mean(axis=0)
    std = frames.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    z = torch.from_numpy((frames - mean) / std)
    _, s, vh = torch.linalg.svd(z, full_matrices=False)
    comps = vh[:k].numpy().astype(np.float32)
    # fix SVD's sign ambiguity so the basis is reproducible: the largest |loading| of each row is positive
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps *= signs[:, None]
    var = s.numpy().astype(np.float64) ** 2
    return Projection(mean=mean.astype(np.float32), std=std, components=comps, t_max=int(t_max),
                      explained_variance_ratio=(var[:k] / var.sum()).astype(np.float32), n_fit_frames=n)
