"""Surface figures: a real nilearn render of the inflated fsaverage5 mesh to PNG."""

import numpy as np
import pytest

from brainrl.cortex import N_VERTICES, N_VERTICES_HEMI, get_roi
from brainrl.cortex.atlas import sphere_coordinates
from brainrl.cortex.plot import ROI_COLOR, plot_roi, plot_surface

mpl_image = pytest.importorskip("matplotlib.image")
mpl_colors = pytest.importorskip("matplotlib.colors")


def _read_rgb(path):
    image = mpl_image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image[..., :3]


def test_plot_surface_diverging_map(tmp_path):
    # +y on the left hemisphere, -y on the right: a symmetric diverging map needs both reds and blues
    values = sphere_coordinates()[:, 1].copy()
    values[N_VERTICES_HEMI:] *= -1
    path = plot_surface(values, tmp_path / "sub" / "map.png", title="test map", symmetric=True, threshold=0.1)
    assert path.is_file() and 20_000 < path.stat().st_size < 2_000_000
    rgb = _read_rgb(path)
    assert 500 <= rgb.shape[0] <= 1000 and 600 <= rgb.shape[1] <= 1200
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 100  # not one colour: mesh, shading, colour bar
    reds = (rgb[..., 0] > 0.6) & (rgb[..., 2] < 0.35)
    blues = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.35)
    assert reds.sum() > 1000 and blues.sum() > 1000


def test_plot_roi_highlights_region(tmp_path):
    broca_png = _read_rgb(plot_roi("broca", tmp_path / "broca.png", dpi=60))
    target = np.array(mpl_colors.to_rgb(ROI_COLOR))
    broca_pixels = (np.abs(broca_png - target).max(axis=-1) < 0.03).sum()
    v1_pixels = (np.abs(_read_rgb(plot_roi("v1", tmp_path / "v1.png", dpi=60)) - target).max(axis=-1) < 0.03).sum()
    assert broca_pixels > 80
    assert v1_pixels > 80
    # v1 (375 vertices in both hemispheres) covers more of the figure than left broca (187)
    assert v1_pixels > broca_pixels
    assert get_roi("v1").n_vertices > get_roi("broca").n_vertices


def test_plot_surface_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="data.mean\\(axis=0\\)"):
        plot_surface(np.zeros((3, N_VERTICES)), tmp_path / "x.png")
    bad = np.zeros(N_VERTICES)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plot_surface(bad, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
