"""Four-view PNGs of fsaverage5 maps on the inflated mesh (nilearn's matplotlib engine, Agg).

Views: left lateral, right lateral (top row), left medial, right medial (bottom row), with one shared,
labelled colour bar. Values are shaded by nilearn's bundled sulcal depth (``bg_on_data``) so sulci and gyri
read through the data; the medial wall (no cortex: Destrieux ``Unknown``/``Medial_wall``) is not drawn as
data, only as the anatomical background, so it cannot be mistaken for a deactivation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from brainrl.cortex.atlas import N_VERTICES, N_VERTICES_HEMI, load_mesh

VIEWS = (("left", "lateral"), ("right", "lateral"), ("left", "medial"), ("right", "medial"))
DIVERGING_CMAP = "RdBu_r"
SEQUENTIAL_CMAP = "viridis"
ROI_COLOR = "#d62728"
#: colour-bar label of a predicted map (brain models predict fMRI responses in arbitrary units)
RESPONSE_LABEL = "predicted fMRI response (a.u.)"


@functools.lru_cache(maxsize=1)
def medial_wall() -> np.ndarray:
    """Boolean (20,484,) mask of the vertices that are not cortex (the medial wall)."""
    from brainrl.cortex.atlas import load_destrieux

    return ~load_destrieux().hemisphere_mask("both")


@functools.lru_cache(maxsize=1)
def _sulcal_depth() -> dict[str, np.ndarray]:
    from nilearn import datasets

    image = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
    return {hemi: np.asarray(image.data.parts[hemi]) for hemi in ("left", "right")}


def _check_values(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (N_VERTICES,):
        hint = " Average over frames first (data.mean(axis=0))." if array.ndim == 2 else ""
        raise ValueError(f"plot_surface takes one value per vertex, shape ({N_VERTICES},); got {array.shape}.{hint}")
    if not np.isfinite(array).all():
        count = int((~np.isfinite(array)).sum())
        raise ValueError(f"values has {count} NaN/inf entries; replace them before plotting.")
    return array


def _limits(values: np.ndarray, vmin: float | None, vmax: float | None, symmetric: bool) -> tuple[float, float]:
    if symmetric:
        given = [abs(float(v)) for v in (vmin, vmax) if v is not None]
        bound = max(given) if given else float(np.abs(values).max())
        bound = bound if bound > 0 else 1.0
        return -bound, bound
    low = float(values.min()) if vmin is None else float(vmin)
    high = float(values.max()) if vmax is None else float(vmax)
    if low >= high:
        high = low + 1.0
    return low, high


def _render(values: np.ndarray, path: Path, title: str | None, cmap: Any, vmin: float, vmax: float,
            threshold: float | None, colorbar: bool, dpi: int, label: str | None = None,
            shade: bool = True) -> Path:
    figure = draw_views(values, title, cmap, vmin, vmax, threshold, colorbar, label, shade)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi)
    finally:
        figure.clear()
    return path


def draw_views(values: np.ndarray, title: str | None, cmap: Any, vmin: float, vmax: float,
               threshold: float | None = None, colorbar: bool = True, label: str | None = None, shade: bool = True):
    """The four-view matplotlib ``Figure`` (Agg canvas, no pyplot state) that ``_render`` saves."""
    from matplotlib import cm, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from nilearn import plotting

    mesh = load_mesh("inflated")
    sulc = _sulcal_depth()
    values = np.where(medial_wall(), np.nan, values)  # NaN: nilearn shows the background there
    halves = {"left": values[:N_VERTICES_HEMI], "right": values[N_VERTICES_HEMI:]}
    # A pyplot-free Agg figure: no global backend switch, nothing left open after saving.
    figure = Figure(figsize=(8.0, 6.2))
    FigureCanvasAgg(figure)
    width = 0.42 if colorbar else 0.49  # room on the right for the colour bar, its ticks and its label
    for i, (hemi, view) in enumerate(VIEWS):
        ax = figure.add_axes((0.01 + (i % 2) * width, 0.47 - (i // 2) * 0.45, width, 0.43), projection="3d")
        plotting.plot_surf_stat_map(
            mesh.parts[hemi], halves[hemi], bg_map=sulc[hemi], hemi=hemi, view=view,
            axes=ax, figure=figure, colorbar=False, cmap=cmap, vmin=vmin, vmax=vmax,
            symmetric_cbar=False, threshold=threshold, bg_on_data=shade,
        )
        ax.set_box_aspect(None, zoom=1.45)
        ax.set_title(f"{hemi} {view}", y=0.92, fontsize=10)
    if colorbar:
        bar_axes = figure.add_axes((0.86, 0.25, 0.018, 0.5))
        mappable = cm.ScalarMappable(norm=colors.Normalize(vmin, vmax), cmap=cmap)
        bar = figure.colorbar(mappable, cax=bar_axes)
        if label:
            bar.set_label(label, fontsize=9)
        if threshold is not None:
            bar_axes.set_title(f"|v| ≥ {threshold:g}", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=12)
    return figure


def plot_surface(
    values: Any,
    path: str | Path,
    title: str | None = None,
    cmap: Any = None,
    vmin: float | None = None,
    vmax: float | None = None,
    symmetric: bool = False,
    threshold: float | None = None,
    dpi: int = 100,
    label: str | None = RESPONSE_LABEL,
) -> Path:
    """Save a four-view PNG of one value per vertex (20,484,) and return its path.

    ``symmetric=True`` centres a diverging colour map on zero (limits ±max|v|, or ±max(|vmin|, |vmax|)),
    the right choice for differences such as LoRA − base. ``threshold`` hides vertices with
    |value| < threshold, showing the sulcal background there. ``label`` names the colour bar's quantity
    and units. Colour limits come from the cortex only (the medial wall is not data).
    """
    array = _check_values(values)
    low, high = _limits(array[~medial_wall()], vmin, vmax, symmetric)
    cmap = cmap or (DIVERGING_CMAP if symmetric else SEQUENTIAL_CMAP)
    return _render(array, Path(path), title, cmap, low, high, threshold, colorbar=True, dpi=dpi, label=label)


def plot_roi(roi: Any, path: str | Path, title: str | None = None, color: str = ROI_COLOR, dpi: int = 100) -> Path:
    """Save a four-view PNG with the ROI (an ``ROI``, preset name or spec) in one colour over the sulci."""
    from matplotlib.colors import ListedColormap

    from brainrl.cortex.rois import get_roi

    region = get_roi(roi)
    values = region.mask().astype(np.float64)
    title = title or f"{region.name} ({region.hemisphere}, {region.n_vertices} vertices)"
    return _render(values, Path(path), title, ListedColormap([color]), 0.0, 1.0, threshold=0.5,
                   colorbar=False, dpi=dpi, shade=False)
