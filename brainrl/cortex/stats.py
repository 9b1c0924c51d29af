"""ROI statistics of fsaverage5 maps: time courses, means, selectivity, many ROIs at once.

Maps are arrays of shape (T, 20,484) (frames × vertices, left hemisphere first); a single (20,484,)
frame and extra leading batch axes (..., T, 20,484) are accepted where noted. Averages are taken in
float64 with equal weight per vertex and per frame, which is the anchor experiment's statistic
(``preds[:, verts].mean(axis=1).mean()``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from brainrl.cortex.atlas import N_VERTICES, N_VERTICES_HEMI
from brainrl.cortex.rois import ANCHOR_ROI_NAMES, get_roi, resolve_mask


def as_maps(data: Any, name: str = "data") -> np.ndarray:
    """Validate brain maps and return them as a float array of shape (..., T, 20,484).

    Accepts a numpy array (or anything with a ``.data`` array, such as ``BrainMap``). A 1-D map is one
    frame. Raises ValueError naming the problem for a wrong shape, no frames or non-finite values.
    """
    array = np.asarray(getattr(data, "data", data))
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    if array.ndim == 0 or array.shape[-1] != N_VERTICES:
        hint = ""
        if array.ndim >= 2 and array.shape[-2] == N_VERTICES:
            hint = " It looks transposed: pass data.T (frames first)."
        elif array.ndim >= 1 and array.shape[-1] == N_VERTICES_HEMI:
            hint = " That is one hemisphere; maps must hold both (left then right)."
        raise ValueError(
            f"{name} must have shape (T, {N_VERTICES}) (frames × fsaverage5 vertices), got {array.shape}.{hint}"
        )
    if array.ndim == 1:
        array = array[None, :]
    if array.shape[-2] == 0:
        raise ValueError(f"{name} has no frames (shape {array.shape}).")
    finite = np.isfinite(array)
    if not finite.all():
        bad_frames = np.flatnonzero(~finite.all(axis=-1).reshape(-1, array.shape[-2]).any(axis=0))
        raise ValueError(
            f"{name} has {int((~finite).sum())} NaN/inf values in frame(s) {bad_frames[:10].tolist()}"
            f"{' ...' if bad_frames.size > 10 else ''}; drop or repair those frames before averaging."
        )
    return array


def averaging_matrix(masks: Sequence[Any]) -> np.ndarray:
    """(20,484, n) float64 matrix whose column j averages over ROI j: ``maps @ W`` gives ROI means."""
    if len(masks) == 0:
        raise ValueError("averaging_matrix needs at least one ROI.")
    columns = np.stack([resolve_mask(m) for m in masks], axis=1).astype(np.float64)
    return columns / columns.sum(axis=0, keepdims=True)


class ROIAverager:
    """Many ROI averages in one matrix product; build once, reuse for every batch of maps."""

    def __init__(self, rois: Sequence[Any] | Mapping[str, Any] | None = None):
        if rois is None:
            rois = ANCHOR_ROI_NAMES
        if isinstance(rois, Mapping):
            names, masks = list(rois), list(rois.values())
        else:
            resolved = [get_roi(r) if isinstance(r, str) else r for r in rois]
            names = [getattr(r, "name", f"roi_{i}") for i, r in enumerate(resolved)]
            masks = resolved
        if len(set(names)) != len(names):
            raise ValueError(f"ROI names must be unique, got {names}.")
        self.names: tuple[str, ...] = tuple(names)
        self.matrix = averaging_matrix(masks)

    def timecourses(self, data: Any) -> np.ndarray:
        """(..., T, n): each ROI's mean over its vertices, frame by frame."""
        return as_maps(data) @ self.matrix

    def means(self, data: Any) -> np.ndarray:
        """(..., n): each ROI's mean over its vertices and the frames."""
        return as_maps(data).mean(axis=-2, dtype=np.float64) @ self.matrix

    def table(self, data: Any) -> dict[str, float]:
        """``{roi name: mean}`` for one map of shape (T, 20,484)."""
        values = self.means(data)
        if values.ndim != 1:
            raise ValueError(f"table() takes one (T, {N_VERTICES}) map; use means() for a batch.")
        return {name: float(v) for name, v in zip(self.names, values)}


def _mask_weights(mask: Any) -> np.ndarray:
    column = resolve_mask(mask).astype(np.float64)
    return column / column.sum()


def roi_timecourse(data: Any, mask: Any) -> np.ndarray:
    """(..., T): the ROI's mean over its vertices at each frame. ``mask``: ROI, name/spec or bool array."""
    return as_maps(data) @ _mask_weights(mask)


def roi_mean(data: Any, mask: Any) -> float:
    """Mean over the ROI's vertices and all frames of one (T, 20,484) map: the anchor's reward."""
    maps = as_maps(data)
    if maps.ndim != 2:
        raise ValueError(
            f"roi_mean takes one (T, {N_VERTICES}) map, got {maps.shape}; use ROIAverager.means for a batch."
        )
    return float(maps.mean(axis=0, dtype=np.float64) @ _mask_weights(mask))


def global_mean(data: Any) -> float:
    """Mean over all cortex (medial wall excluded) and all frames."""
    return roi_mean(data, "global")


def selectivity(data: Any, mask: Any, reference_masks: Iterable[Any] | None = None) -> float:
    """ROI mean minus the global (cortex) mean, or minus the mean of the reference ROIs' means.

    A positive value means the ROI rose more than the reference did, so a uniform shift of the whole
    map leaves selectivity unchanged. Each reference ROI weighs the same, whatever its size.
    """
    maps = as_maps(data)
    target = roi_mean(maps, mask)
    if reference_masks is None:
        return target - global_mean(maps)
    references = list(reference_masks)
    if not references:
        raise ValueError("reference_masks is empty; pass None to compare with the global mean.")
    reference = ROIAverager(_as_named(references)).means(maps)
    return target - float(reference.mean())


def _as_named(masks: list[Any]) -> dict[str, Any]:
    return {f"ref_{i}": m for i, m in enumerate(masks)}


def roi_table(data: Any, rois: Sequence[Any] | Mapping[str, Any] | None = None) -> dict[str, float]:
    """``{name: mean}`` for each ROI (default: the anchor's 20 regions), computed in one product."""
    return ROIAverager(rois).table(data)
