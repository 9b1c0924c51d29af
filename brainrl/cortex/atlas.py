"""The Destrieux (aparc.a2009s) atlas and the fsaverage5 mesh, available with no network."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

N_VERTICES_HEMI = 10242
N_VERTICES = 2 * N_VERTICES_HEMI
HEMISPHERES = ("left", "right")


@dataclass(frozen=True)
class DestrieuxAtlas:
    """Per-hemisphere label indices (10,242 each, fsaverage5 order) and the 76 label names."""

    left: np.ndarray
    right: np.ndarray
    names: tuple[str, ...]

    @property
    def labels(self) -> np.ndarray:
        """Label index per vertex for the whole 20,484-vertex cortex (left first)."""
        return np.concatenate([self.left, self.right])

    def label_index(self, name: str) -> int:
        return self.names.index(name)

    def mask(self, label_names, hemisphere: str = "both") -> np.ndarray:
        """Boolean (20,484,) mask of the vertices carrying any of ``label_names`` in ``hemisphere``
        ("left", "right" or "both")."""
        idx = [self.label_index(n) for n in label_names]
        left = np.isin(self.left, idx) if hemisphere in ("left", "both") else np.zeros(N_VERTICES_HEMI, bool)
        right = np.isin(self.right, idx) if hemisphere in ("right", "both") else np.zeros(N_VERTICES_HEMI, bool)
        return np.concatenate([left, right])

    def hemisphere_mask(self, hemisphere: str) -> np.ndarray:
        """Cortex of one hemisphere (or "both"), medial wall excluded."""
        return self.mask([n for n in self.names if n not in ("Unknown", "Medial_wall")], hemisphere)


@functools.lru_cache(maxsize=1)
def load_destrieux() -> DestrieuxAtlas:
    """The vendored Destrieux labels (see ``brainrl/cortex/data/PROVENANCE.md``)."""
    with resources.files("brainrl.cortex").joinpath("data/destrieux_fsaverage5.npz").open("rb") as fh:
        data = np.load(fh, allow_pickle=False)
        return DestrieuxAtlas(
            left=data["left"].astype(np.int32),
            right=data["right"].astype(np.int32),
            names=tuple(str(n) for n in data["names"]),
        )


@functools.lru_cache(maxsize=4)
def load_mesh(kind: str = "inflated"):
    """nilearn's bundled fsaverage5 mesh (``pial``, ``inflated``, ``sphere``, ``white_matter``, ``flat``)
    as a ``nilearn.surface.PolyMesh`` with ``parts['left']`` and ``parts['right']``."""
    from nilearn import datasets

    return datasets.load_fsaverage("fsaverage5")[kind]


def sphere_coordinates() -> np.ndarray:
    """(20,484, 3) unit vectors of the fsaverage5 sphere, left then right: a smooth coordinate system."""
    mesh = load_mesh("sphere")
    coords = np.concatenate([mesh.parts["left"].coordinates, mesh.parts["right"].coordinates])
    return coords / np.linalg.norm(coords, axis=1, keepdims=True)
