"""ROI presets, custom ROIs (labels, mask files, spec strings) and their error messages."""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from brainrl.cortex import (
    ANCHOR_ROI_NAMES,
    N_VERTICES,
    N_VERTICES_HEMI,
    ROI,
    describe_rois,
    get_roi,
    list_rois,
    load_destrieux,
    parse_roi_spec,
    register_roi,
    resolve_mask,
)
from brainrl.cortex import rois as rois_module

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rois.md"


@pytest.fixture
def clean_registry():
    presets = rois_module._presets()
    saved = dict(presets)
    yield
    presets.clear()
    presets.update(saved)


# (b) presets ---------------------------------------------------------------------------------------
def test_anchor_regions_are_all_presets():
    assert len(ANCHOR_ROI_NAMES) == 20 and len(set(ANCHOR_ROI_NAMES)) == 20
    assert set(ANCHOR_ROI_NAMES) <= set(list_rois())
    for extra in ("global", "left_hemisphere", "right_hemisphere", "broca_right", "broca_bilateral"):
        assert extra in list_rois()


@pytest.mark.parametrize("name", rois_module.list_rois())
def test_every_preset_lies_in_its_declared_hemisphere(name):
    roi = get_roi(name)
    mask = roi.mask()
    assert mask.shape == (N_VERTICES,) and mask.dtype == bool
    left, right = int(mask[:N_VERTICES_HEMI].sum()), int(mask[N_VERTICES_HEMI:].sum())
    assert roi.n_vertices == left + right > 0
    if roi.hemisphere == "left":
        assert left > 0 and right == 0
    elif roi.hemisphere == "right":
        assert right > 0 and left == 0
    else:
        assert roi.hemisphere == "both" and left > 0 and right > 0
    assert roi.description


def test_preset_masks_match_atlas_labels():
    atlas = load_destrieux()
    broca = get_roi("broca")
    assert broca.labels == ("G_front_inf-Opercular", "G_front_inf-Triangul") and broca.hemisphere == "left"
    np.testing.assert_array_equal(broca.mask(), atlas.mask(broca.labels, "left"))
    both = get_roi("broca").mask() | get_roi("broca_right").mask()
    np.testing.assert_array_equal(get_roi("broca_bilateral").mask(), both)


def test_anchor_labelling_mistakes_are_fixed():
    labels = load_destrieux().labels
    names = load_destrieux().names
    in_label = lambda roi, label: int((get_roi(roi).mask() & (labels == names.index(label))).sum())  # noqa: E731
    # the anchor's "sts" was the posterior lateral fissure + planum temporale, with no STS at all
    assert in_label("anchor_sts", "S_temporal_sup") == 0
    assert in_label("sts", "S_temporal_sup") == get_roi("sts").n_vertices
    assert in_label("sts", "Lat_Fis-post") == 0
    # the anchor's "wernicke" was the whole lateral STG + STS
    assert in_label("anchor_wernicke", "G_temp_sup-Lateral") > 0
    assert in_label("wernicke", "G_temp_sup-Lateral") == 0 and in_label("wernicke", "S_temporal_sup") == 0
    assert not (get_roi("wernicke").mask() & get_roi("sts").mask()).any()


def test_global_and_hemisphere_presets_exclude_medial_wall():
    atlas = load_destrieux()
    medial = atlas.labels == atlas.names.index("Medial_wall")
    glob = get_roi("global").mask()
    assert not (glob & medial).any()
    np.testing.assert_array_equal(glob, ~medial)
    np.testing.assert_array_equal(get_roi("left_hemisphere").mask() | get_roi("right_hemisphere").mask(), glob)
    assert get_roi("all_vertices").n_vertices == N_VERTICES


def test_docs_table_matches_registry():
    """docs/rois.md lists every preset with its hemisphere and vertex count."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`[\w.-]+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], int(cells[2].replace(",", "")))
    described = {r["name"]: (r["hemisphere"], r["n_vertices"]) for r in describe_rois()}
    assert rows == described


# (c) custom ROIs -----------------------------------------------------------------------------------
def test_from_labels_and_bilateral_alias():
    roi = ROI.from_labels("ifg", ["G_front_inf-Opercular", "G_front_inf-Triangul"], "bilateral")
    assert roi.hemisphere == "both"
    assert roi.n_vertices == get_roi("broca").n_vertices + get_roi("broca_right").n_vertices
    again = ROI.from_labels("ifg", ("G_front_inf-Opercular", "G_front_inf-Triangul"), "both")
    assert again == roi and hash(again) == hash(roi)
    assert pickle.loads(pickle.dumps(roi)) == roi


def test_roi_validation_errors():
    with pytest.raises(ValueError, match="hemisphere"):
        ROI.from_labels("x", ["G_precentral"], "middle")
    with pytest.raises(ValueError, match="at least one"):
        ROI.from_labels("x", [], "left")
    with pytest.raises(TypeError, match="list of label names"):
        ROI("x", labels="G_precentral")
    with pytest.raises(ValueError, match="no vertices"):
        ROI.from_labels("x", ["Unknown"], "both")
    with pytest.raises(ValueError, match="not both"):
        ROI("x", labels=("G_precentral",), vertices=(1, 2))
    with pytest.raises(ValueError, match="lie in 'right'"):
        ROI("x", vertices=(N_VERTICES_HEMI + 5,), hemisphere="left")


def test_mask_file_boolean_npy(tmp_path):
    mask = get_roi("broca").mask()
    np.save(tmp_path / "broca_mask.npy", mask)
    roi = ROI.from_mask_file(tmp_path / "broca_mask.npy")
    assert roi.name == "broca_mask" and roi.hemisphere == "left" and roi.labels == () and roi.spec() is None
    np.testing.assert_array_equal(roi.mask(), mask)
    np.save(tmp_path / "binary.npy", mask.astype(np.float32))
    np.testing.assert_array_equal(ROI.from_mask_file(tmp_path / "binary.npy", name="b").mask(), mask)


def test_mask_file_indices_npy_and_txt(tmp_path):
    indices = np.array([5, 17, 17, N_VERTICES_HEMI + 3, N_VERTICES - 1])
    np.save(tmp_path / "idx.npy", indices)
    roi = ROI.from_mask_file(tmp_path / "idx.npy")
    assert roi.vertices == (5, 17, N_VERTICES_HEMI + 3, N_VERTICES - 1) and roi.hemisphere == "both"
    (tmp_path / "idx.txt").write_text("# my region\n5, 17\n17 10245\n20483  # last vertex\n")
    from_txt = ROI.from_mask_file(tmp_path / "idx.txt", name="txt_roi")
    assert from_txt.vertices == roi.vertices and from_txt.n_vertices == 4
    assert from_txt.mask().sum() == 4 and from_txt.mask()[N_VERTICES - 1]


@pytest.mark.parametrize(
    "content, message",
    [
        (np.ones(100, dtype=bool), "must have 20484 values"),
        (np.ones(N_VERTICES_HEMI, dtype=np.int64), "must have 20484 values"),
        (np.array([3, 20484]), "out of range"),
        (np.array([-1, 4]), "out of range"),
        (np.array([1.5, 7.0]), "must be integers"),
        (np.zeros(N_VERTICES, dtype=bool), "selects no vertices"),
        (np.array([], dtype=np.int64), "is empty"),
        (np.ones((3, 4), dtype=np.int64), "1-D"),
        (np.array([1.0, np.nan, 3.0]), "NaN"),
    ],
)
def test_mask_file_errors(tmp_path, content, message):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ValueError, match=message):
        ROI.from_mask_file(tmp_path / "bad.npy")


def test_mask_file_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ROI.from_mask_file(tmp_path / "missing.npy")
    (tmp_path / "roi.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"\.npy or \.txt"):
        ROI.from_mask_file(tmp_path / "roi.csv")
    (tmp_path / "words.txt").write_text("12 thirteen")
    with pytest.raises(ValueError, match="'thirteen' is not a number"):
        ROI.from_mask_file(tmp_path / "words.txt")


def test_spec_strings(tmp_path):
    roi = get_roi("labels:G_front_inf-Opercular, G_front_inf-Triangul@left")
    np.testing.assert_array_equal(roi.mask(), get_roi("broca").mask())
    assert parse_roi_spec(roi.spec()) == roi
    assert get_roi("labels:G_precentral").hemisphere == "both"
    named = get_roi("m1=labels:G_precentral@right")
    assert named.name == "m1" and named.hemisphere == "right"
    np.save(tmp_path / "m.npy", get_roi("v1").mask())
    from_file = get_roi(f"visual=mask:{tmp_path / 'm.npy'}")
    assert from_file.name == "visual" and from_file.n_vertices == get_roi("v1").n_vertices
    with pytest.raises(ValueError, match="Cannot parse"):
        parse_roi_spec("voxels:1,2")
    with pytest.raises(ValueError, match="lists no labels"):
        parse_roi_spec("labels:@left")
    with pytest.raises(ValueError, match="hemisphere"):
        parse_roi_spec("labels:G_precentral@top")


def test_register_roi(clean_registry):
    roi = ROI.from_labels("my_ifg", ["G_front_inf-Opercular"], "left", "opercular only")
    register_roi(roi)
    assert "my_ifg" in list_rois() and get_roi("my_ifg") is roi
    with pytest.raises(ValueError, match="already registered"):
        register_roi(ROI.from_labels("my_ifg", ["G_precentral"], "left"))
    replacement = ROI.from_labels("my_ifg", ["G_precentral"], "left")
    register_roi(replacement, overwrite=True)
    assert get_roi("my_ifg") is replacement
    with pytest.raises(ValueError, match="cannot be registered"):
        register_roi(ROI.from_labels("bad name:x", ["G_precentral"]))
    with pytest.raises(TypeError):
        register_roi("broca")


def test_registry_is_restored_after_registration_test():
    assert "my_ifg" not in list_rois()


def test_resolve_mask_and_provenance():
    mask = get_roi("auditory").mask()
    np.testing.assert_array_equal(resolve_mask("auditory"), mask)
    np.testing.assert_array_equal(resolve_mask(mask), mask)
    with pytest.raises(TypeError, match="boolean"):
        resolve_mask(np.flatnonzero(mask))
    with pytest.raises(ValueError, match="shape"):
        resolve_mask(mask[:100])
    with pytest.raises(ValueError, match="no vertices"):
        resolve_mask(np.zeros(N_VERTICES, bool))
    prov = get_roi("auditory").provenance()
    assert prov["n_vertices"] == mask.sum() and len(prov["vertices_sha256"]) == 16
    assert prov["vertices_sha256"] != get_roi("broca").provenance()["vertices_sha256"]
    # the mask is a copy: changing it does not change the ROI
    mask[:] = False
    assert get_roi("auditory").mask().any()


# (d) unknown names ---------------------------------------------------------------------------------
def test_unknown_roi_suggests_closest():
    with pytest.raises(KeyError) as info:
        get_roi("brocca")
    message = str(info.value)
    assert "Did you mean 'broca'" in message and "wernicke" in message and "labels:" in message


def test_unknown_label_suggests_closest():
    with pytest.raises(KeyError) as info:
        ROI.from_labels("x", ["G_front_inf-Opercularis"], "left")
    assert "Did you mean 'G_front_inf-Opercular'" in str(info.value)
    with pytest.raises(KeyError, match="G_temporal_middle"):
        get_roi("labels:G_temporal_midle@left")
