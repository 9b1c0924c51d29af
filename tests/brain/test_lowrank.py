"""Maps held as coefficients on a basis: region means straight from the coefficients equal the averages of
the built map, the map is built on demand, and pickling gives a plain map."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from brainrl.brain.base import N_VERTICES, BrainMap
from brainrl.brain.lowrank import PROJECTIONS_KEPT, LowRankMap, MapBasis
from brainrl.cortex.stats import averaging_matrix

# float32 maps (the built map is rounded to float32 per vertex) against float64 projections: region means of
# maps of order 1 agree to ~1e-7; the bound below leaves room for any BLAS summation order
ATOL = 1e-5


def random_basis(k: int = 12, seed: int = 0) -> MapBasis:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N_VERTICES, k)))
    return MapBasis(rng.normal(0.5, 0.2, N_VERTICES), (q.T * 40.0))


def random_masks(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(N_VERTICES) < p for p in rng.uniform(0.005, 0.3, n)]


def test_region_means_from_coefficients_equal_the_built_maps_averages():
    basis = random_basis()
    weights = averaging_matrix(random_masks(5, seed=1) + ["global"])
    coefficients = np.random.default_rng(2).normal(0, 3, (8, basis.k))
    full = basis.maps(coefficients).astype(np.float64) @ weights
    maps = [LowRankMap(c, basis) for c in coefficients]
    fast = np.stack([m.region_means(weights) for m in maps])
    np.testing.assert_allclose(fast, full, rtol=0, atol=ATOL)
    np.testing.assert_allclose(basis.region_means(coefficients, weights), full, rtol=0, atol=ATOL)
    # the plain BrainMap path gives the same numbers from the built data
    plain = np.stack([BrainMap(m.data).region_means(weights) for m in maps])
    np.testing.assert_allclose(plain, full, rtol=0, atol=ATOL)


def test_the_map_is_built_only_when_asked_and_then_kept():
    basis = random_basis()
    c = np.random.default_rng(3).normal(size=basis.k)
    m = LowRankMap(c, basis, provenance={"model": "x"})
    weights = averaging_matrix(random_masks(2, seed=4))
    m.region_means(weights)
    assert m._data is None  # region means did not build the 20,484 vertices
    assert m.n_frames == 1
    data = m.data
    assert data.shape == (1, N_VERTICES) and data.dtype == np.float32 and m.data is data
    np.testing.assert_array_equal(data[0], basis.mean + c.astype(np.float32) @ basis.components)
    np.testing.assert_array_equal(m.mean_map(), data[0])


def test_pickled_low_rank_map_is_a_plain_map_with_the_same_data():
    basis = random_basis()
    m = LowRankMap(np.random.default_rng(5).normal(size=basis.k), basis, provenance={"model": "surrogate"})
    back = pickle.loads(pickle.dumps(m))
    assert type(back) is BrainMap and back.provenance == {"model": "surrogate"}
    np.testing.assert_array_equal(back.data, m.data)


def test_projections_follow_the_weight_matrix_not_its_address():
    """A weight matrix freed and replaced (possibly at the same address) is projected anew."""
    basis = random_basis()
    c = np.random.default_rng(6).normal(size=basis.k)
    for seed in range(PROJECTIONS_KEPT + 4):  # more matrices than are kept: the store is cleared, still right
        weights = averaging_matrix(random_masks(3, seed=100 + seed))
        expected = basis.maps(c[None])[0].astype(np.float64) @ weights
        np.testing.assert_allclose(basis.region_means(c, weights), expected, rtol=0, atol=ATOL)
        del weights
    assert len(basis._projections) <= PROJECTIONS_KEPT


def test_bad_shapes_are_refused_with_the_expected_shapes():
    basis = random_basis(k=4)
    with pytest.raises(ValueError, match="needs 4 coefficients"):
        LowRankMap(np.zeros(5), basis)
    with pytest.raises(ValueError, match=r"mean \(20484,\) and components"):
        MapBasis(np.zeros(10), np.zeros((2, 10)))
    with pytest.raises(ValueError, match="weights must be"):
        basis.region_means(np.zeros(4), np.zeros((10, 2)))
