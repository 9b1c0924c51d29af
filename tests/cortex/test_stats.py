"""ROI statistics against hand-computed values on small synthetic maps."""

import numpy as np
import pytest

from brainrl.brain.base import BrainMap
from brainrl.cortex import (
    ANCHOR_ROI_NAMES,
    N_VERTICES,
    N_VERTICES_HEMI,
    ROI,
    ROIAverager,
    as_maps,
    averaging_matrix,
    get_roi,
    global_mean,
    roi_mean,
    roi_table,
    roi_timecourse,
    selectivity,
)

N_CORTEX = 18715  # 20,484 minus 888 + 881 medial-wall vertices


def _three_vertex_roi():
    broca = get_roi("broca").vertex_indices()
    return ROI("three", vertices=tuple(broca[:3])), broca[:3]


def test_timecourse_and_mean_by_hand():
    roi, (a, b, c) = _three_vertex_roi()
    data = np.zeros((2, N_VERTICES), np.float32)
    data[0, a], data[1, b], data[1, c] = 3.0, 6.0, -3.0
    data[:, N_VERTICES_HEMI + 7] = 100.0  # outside the ROI: must not count
    np.testing.assert_allclose(roi_timecourse(data, roi), [1.0, 1.0])
    assert roi_mean(data, roi) == pytest.approx(1.0)
    data[1, c] = 0.0
    np.testing.assert_allclose(roi_timecourse(data, roi), [1.0, 2.0])
    assert roi_mean(data, roi) == pytest.approx(1.5)
    assert roi_mean(data, roi.mask()) == pytest.approx(1.5)


def test_global_mean_excludes_medial_wall():
    assert get_roi("global").n_vertices == N_CORTEX
    data = np.zeros((3, N_VERTICES))
    data[:, get_roi("global").mask()] = 2.0
    data[:, ~get_roi("global").mask()] = 1000.0  # medial wall
    assert global_mean(data) == pytest.approx(2.0)
    n_medial = N_VERTICES - N_CORTEX
    assert roi_mean(data, "all_vertices") == pytest.approx((2.0 * N_CORTEX + 1000.0 * n_medial) / N_VERTICES)


def test_selectivity_by_hand():
    broca, wernicke, sts = (get_roi(n) for n in ("broca", "wernicke", "sts"))
    data = np.zeros((4, N_VERTICES))
    data[:, broca.mask()] = 1.0
    data[:, wernicke.mask()] = 0.5
    data[:, sts.mask()] = -1.0
    expected_global = (broca.n_vertices * 1.0 + wernicke.n_vertices * 0.5 - sts.n_vertices) / N_CORTEX
    assert global_mean(data) == pytest.approx(expected_global)
    assert selectivity(data, "broca") == pytest.approx(1.0 - expected_global)
    # reference ROIs weigh equally whatever their size: 1 - (0.5 + -1) / 2
    assert selectivity(data, broca, ["wernicke", sts]) == pytest.approx(1.25)
    # a uniform shift of the whole map changes the mean but not the selectivity
    shifted = data + 0.7
    assert roi_mean(shifted, broca) == pytest.approx(1.7)
    assert selectivity(shifted, broca) == pytest.approx(selectivity(data, broca))
    assert selectivity(shifted, broca, ["wernicke", "sts"]) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="reference_masks is empty"):
        selectivity(data, broca, [])


def test_matrix_path_equals_anchor_indexing():
    """The averaging matrix gives the anchor's preds[:, verts].mean(axis=1).mean() for every ROI."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, N_VERTICES)).astype(np.float32)
    table = roi_table(data)
    assert list(table) == list(ANCHOR_ROI_NAMES)
    for name, value in table.items():
        verts = get_roi(name).vertex_indices()
        anchor_value = float(data[:, verts].astype(np.float64).mean(axis=1).mean())
        assert value == pytest.approx(anchor_value, abs=1e-12)
        assert roi_mean(data, name) == pytest.approx(anchor_value, abs=1e-12)
    matrix = averaging_matrix([get_roi("broca"), get_roi("v1").mask()])
    assert matrix.shape == (N_VERTICES, 2)
    np.testing.assert_allclose(matrix.sum(axis=0), 1.0)


def test_averager_batches_and_names():
    rng = np.random.default_rng(1)
    batch = rng.normal(size=(3, 5, N_VERTICES))
    averager = ROIAverager(["broca", "labels:G_precentral@right", get_roi("v1")])
    assert averager.names == ("broca", "labels:G_precentral@right", "v1")
    means = averager.means(batch)
    assert means.shape == (3, 3)
    for i in range(3):
        for j, name in enumerate(averager.names):
            assert means[i, j] == pytest.approx(roi_mean(batch[i], get_roi(name)))
    courses = averager.timecourses(batch)
    assert courses.shape == (3, 5, 3)
    np.testing.assert_allclose(courses[2, :, 0], roi_timecourse(batch[2], "broca"))
    with pytest.raises(ValueError, match="one \\(T, 20484\\) map"):
        averager.table(batch)
    named = ROIAverager({"a": get_roi("broca").mask(), "b": "sts"})
    assert named.names == ("a", "b")
    with pytest.raises(ValueError, match="unique"):
        ROIAverager(["broca", get_roi("broca")])


def test_accepts_brainmap_and_single_frame():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(4, N_VERTICES)).astype(np.float32)
    assert roi_mean(BrainMap(data), "broca") == pytest.approx(roi_mean(data, "broca"))
    frame = data.mean(axis=0)
    assert roi_mean(frame, "broca") == pytest.approx(roi_mean(data, "broca"), rel=1e-5)
    assert as_maps(frame).shape == (1, N_VERTICES)


def test_input_validation_errors():
    with pytest.raises(ValueError, match=r"shape \(T, 20484\).*transposed"):
        roi_mean(np.zeros((N_VERTICES, 5)), "broca")
    with pytest.raises(ValueError, match="one hemisphere"):
        roi_mean(np.zeros((5, N_VERTICES_HEMI)), "broca")
    with pytest.raises(ValueError, match="no frames"):
        roi_mean(np.zeros((0, N_VERTICES)), "broca")
    data = np.zeros((5, N_VERTICES))
    data[3, 10] = np.nan
    data[1, 99] = np.inf
    with pytest.raises(ValueError, match=r"2 NaN/inf values in frame\(s\) \[1, 3\]"):
        roi_timecourse(data, "broca")
    with pytest.raises(ValueError, match="numeric"):
        roi_mean(np.array([["a"] * N_VERTICES]), "broca")
    with pytest.raises(ValueError, match="batch"):
        roi_mean(np.zeros((2, 3, N_VERTICES)), "broca")
    with pytest.raises(KeyError, match="Did you mean 'broca'"):
        roi_mean(np.zeros((2, N_VERTICES)), "brocca")
