"""OOD statistics: calibrated p-values in distribution, far items flagged, storage, fitting from a campaign."""

import numpy as np
import pytest
from scipy.stats import kstest

from brainrl.sbi.inference.ood import OODReference, fit_ood


def _gauss(n, d=16, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, d)
    return rng.normal(size=(n, d)) * scales + shift


@pytest.mark.parametrize("held_out", [True, False])
def test_in_distribution_p_values_are_uniform_and_far_items_flagged(held_out):
    train, held = _gauss(300, seed=0), _gauss(300, seed=1)
    ref = OODReference.fit(train, held if held_out else None, folds=5)
    fresh = ref.score(_gauss(2000, seed=2), threshold=0.05)
    assert 0.02 < fresh.flagged.mean() < 0.09  # ≈ the threshold by chance, no more
    assert kstest(fresh.p_value, "uniform").statistic < 0.08
    assert np.median(fresh.factor) == 1.0

    far = ref.score(_gauss(50, shift=6.0, seed=3), threshold=0.05)
    assert far.flagged.all() and (far.p_value <= 1 / (1 + len(ref.reference)) + 1e-12).all()
    assert (far.factor < 0.5).all()
    farther = ref.score(_gauss(50, shift=12.0, seed=3), threshold=0.05)
    assert (farther.factor < far.factor).all() and (farther.distance > far.distance).all()


def test_save_load_roundtrip_and_clear_errors(tmp_path):
    ref = OODReference.fit(_gauss(100), _gauss(40, seed=1))
    ref.save(tmp_path)
    again = OODReference.load(tmp_path)
    z = _gauss(5, seed=9)
    assert np.array_equal(again.distance(z), ref.distance(z)) and again.meta["reference"] == "held-out"
    with pytest.raises(FileNotFoundError, match="brainrl ood-fit"):
        OODReference.load(tmp_path / "nothing")
    with pytest.raises(ValueError, match="threshold"):
        ref.score(z, threshold=1.5)
    with pytest.raises(ValueError, match=r"\(n, 16\)"):
        ref.distance(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least 3"):
        OODReference.fit(np.zeros((2, 4)))


def test_fit_ood_from_campaign_arrays_with_a_posterior(tmp_path):
    from theta_fakes import KnownPosterior

    post = KnownPosterior(k=4, t_max=8)
    rng = np.random.default_rng(0)
    n = 80
    coeffs = rng.normal(size=(n, 8, 4)).astype(np.float32)
    mask = np.ones((n, 8), np.float32)
    arrays = {"coeffs": coeffs, "mask": mask, "ids": np.arange(n), "projection": post.projection}
    ref = fit_ood(post, arrays, tmp_path)  # the campaign is not the posterior's: cross-fitted reference
    assert (tmp_path / "ood.npz").is_file() and ref.meta["reference"].endswith("cross-fitted")
    assert ref.meta["n_reference"] == n
    far = ref.score(post.summaries((coeffs[:5] + 50, mask[:5])))
    assert far.flagged.all()
    other = KnownPosterior(k=4, t_max=8, seed=1)
    with pytest.raises(ValueError, match="projection"):
        fit_ood(other, arrays, tmp_path)
