import json

import numpy as np
import pytest

from brainrl.sbi.judges.cycle import CycleEvaluator
from brainrl.sbi.diagnostics.recovery import point_metrics, posterior_metrics
from brainrl.sbi.simulation.prior import PARAM_NAMES

from sbi_fakes import ScriptedGenerator, scores_reply

rng = np.random.default_rng(0)
THETA = rng.uniform(size=(200, 6))


def test_perfect_point_estimates():
    m = point_metrics(THETA, THETA)
    assert all(abs(r - 1) < 1e-12 for r in m["pearson_r"].values()) and max(m["rmse"].values()) == 0
    assert np.allclose(np.diag(m["cross_correlation"]), 1) and m["mean_abs_off_diagonal"] < 0.15  # independent prior


def test_entangled_estimates_show_in_cross_correlation():
    est = THETA.copy()
    est[:, 2] = 0.5 * THETA[:, 0] + 0.5 * THETA[:, 2]  # dominance estimate leaks valence
    m = point_metrics(est, THETA)
    assert m["cross_correlation"][0][2] > 0.6 and m["pearson_r"]["dominance"] < 0.8


def test_calibrated_posterior_vs_overconfident():
    # truth and draws exchangeable given the observation: ranks are exactly uniform (calibrated by construction)
    s = 0.05
    local = np.random.default_rng(42)
    obs = local.uniform(0.2, 0.8, size=THETA.shape)
    truth = obs + local.normal(scale=s, size=obs.shape)
    calibrated = obs[:, None, :] + local.normal(scale=s, size=(200, 300, 6))
    good = posterior_metrics(calibrated, truth)
    assert all(r > 0.95 for r in good["pearson_r"].values())
    # log gamma < 0 happens with 5% probability per dimension under calibration; allow one of six
    assert sum(g > 0 for g in good["calibration_log_gamma"].values()) >= 5
    # the calibration figure's check: the rank ECDF inside BayesFlow's 95% simultaneous band
    assert sum(e == 0 for e in good["ecdf_band_excursion"].values()) >= 5
    expected_bayes = np.sqrt(2) * s  # error of the mean + posterior spread
    assert all(abs(b - expected_bayes) < 0.015 for b in good["bayes_rmse"].values())
    assert all(0.9 < c < 1 for c in good["posterior_contraction"].values())
    overconfident = obs[:, None, :] + local.normal(scale=s / 10, size=(200, 300, 6))
    bad = posterior_metrics(overconfident, truth)
    assert all(g < 0 for g in bad["calibration_log_gamma"].values())
    assert all(e > 0.05 for e in bad["ecdf_band_excursion"].values())
    prior_draws = rng.uniform(size=(200, 300, 6))  # the prior as posterior: calibrated, no contraction
    flat = posterior_metrics(prior_draws, THETA)
    assert all(abs(c) < 0.05 for c in flat["posterior_contraction"].values())
    with pytest.raises(ValueError, match="draws must be"):
        posterior_metrics(prior_draws[:, :, :5], THETA)


def test_cycle_evaluator_parses_retries_and_fails_cleanly():
    truth = THETA[:4]

    def reply(messages, seed):
        block = messages[1]["content"]
        i = int(block.split("item")[1].split()[0])
        if i == 3:
            return "I think the valence is high."  # never follows the format
        if len(messages) == 2 and i == 1:
            return scores_reply(truth[i]).replace("arousal", "energy")  # wrong name first, then corrected
        return scores_reply(truth[i])

    gen = ScriptedGenerator(reply)
    blocks = [[f"Headline of item {i} with some words"] for i in range(4)]
    result = CycleEvaluator(gen, max_attempts=2).evaluate(blocks, ids=[10, 11, 12, 13])
    assert np.allclose(result.scores[:3], np.round(truth[:3], 3))
    assert list(result.valid) == [True, True, True, False]
    assert "after 2 attempts" in result.reasons[3] and result.reasons[1] is None
    assert gen.calls == 2


@pytest.mark.slow
def test_diagnose_end_to_end_with_known_posterior(tmp_path):
    """diagnose() on a campaign folder with a posterior double whose draws are known (the real fit is tested in
    test_estimator); checks the report files and that SBI and cycle numbers sit side by side."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.sbi.simulation.campaign import Campaign, CampaignConfig, ProjectionConfig, load_campaign_arrays
    from brainrl.sbi.diagnostics.diagnose import DiagnoseConfig, diagnose
    from brainrl.sbi.inference.estimator import data_fingerprint

    cfg = CampaignConfig(out_dir=str(tmp_path / "camp"), n_items=12, shard_size=6, batch_size=6,
                         projection=ProjectionConfig(k=6))
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=BrainPipeline(PipelineConfig(cache_dir=""))).run()
    arrays = load_campaign_arrays(cfg.out_dir)

    class KnownPosterior:  # draws centred on the truth: what a perfect estimator would return
        param_names = PARAM_NAMES
        projection = arrays["projection"]
        meta = {"data": {"fingerprint": data_fingerprint(arrays["ids"])}, "splits": {"test": list(range(12))}}

        def sample(self, inputs, n, seed=0, **kw):
            coeffs, _ = inputs
            rows = [int(np.where((arrays["coeffs"] == c).all(axis=(1, 2)))[0][0]) for c in coeffs]
            t = arrays["theta"][rows]
            return np.clip(t[:, None, :] + np.random.default_rng(seed).normal(scale=0.02, size=(len(t), n, 6)), 0, 1)

    by_text = {tuple(h): t for h, t in zip(arrays["headlines"], arrays["theta"])}
    noisy_llm = ScriptedGenerator(lambda m, s: scores_reply(np.clip(
        by_text[tuple(line.split(". ", 1)[1] for line in m[1]["content"].split("\n")[1:6])]
        + np.random.default_rng(s % 2**32).normal(scale=0.2, size=6), 0, 1)))
    report = diagnose("known", cfg.out_dir, tmp_path / "diag", DiagnoseConfig(n_samples=50),
                      posterior=KnownPosterior(), cycle_evaluator=CycleEvaluator(noisy_llm))
    saved = json.loads((tmp_path / "diag" / "diagnostics.json").read_text())
    assert saved["n_cases"] == 12 and saved["cycle"]["n_valid"] == 12
    sbi, cycle = saved["results"]["sbi"], saved["results"]["cycle"]
    assert min(sbi["pearson_r"].values()) > 0.95 and np.mean(list(cycle["pearson_r"].values())) < 0.95
    for name in ("sbi_recovery.png", "sbi_calibration_ecdf.png", "cross_correlation.png", "pearson_r.png",
                 "cycle_recovery.png", "index.html"):
        assert (tmp_path / "diag" / name).stat().st_size > 1000
    assert "cycle" in (tmp_path / "diag" / "index.html").read_text() and report["images"]
