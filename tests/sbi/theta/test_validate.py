"""The θ validator: statistics on known posteriors, a fast end-to-end run with tiny components, and (slow)
a run through the CLI with a real fitted posterior and the offline brain pipeline."""

import json

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.policy.sampling import SamplingConfig
from brainrl.sbi.inference.ood import OODReference
from brainrl.sbi.theta.validate import ValidateConfig, dimension_intervals, print_validation, validate
from tests.helpers import CountingSpeech, LengthBrain
from theta_fakes import KnownPosterior


def _values(intervals, key):
    return np.array([stat["value"] for stat in intervals[key]])


def test_dimension_intervals_recover_known_behaviour():
    rng = np.random.default_rng(0)
    theta = rng.uniform(size=(400, 6))
    index = np.arange(400) // 2  # two completions per prompt
    sd = 0.1
    centre = theta + sd * rng.normal(size=theta.shape)  # posterior centred at a noisy version of θ*
    calibrated = centre[:, None, :] + sd * rng.normal(size=(400, 300, 6))
    stats = dimension_intervals(theta, calibrated, index)
    assert np.all(_values(stats, "pearson_r") > 0.9) and np.allclose(_values(stats, "rmse"), sd, atol=0.02)
    assert np.allclose(_values(stats, "coverage_90"), 0.9, atol=0.05)
    assert np.allclose(_values(stats, "coverage_50"), 0.5, atol=0.07)
    assert np.allclose(_values(stats, "bayes_rmse"), np.sqrt(2) * sd, atol=0.02)
    for key in stats:  # every interval holds its estimate and is finite with 200 prompts
        for stat in stats[key]:
            assert stat["ci_low"] <= stat["value"] <= stat["ci_high"] and np.isfinite(stat["ci_low"])
    assert sum(s["ci_low"] <= sd <= s["ci_high"] for s in stats["rmse"]) >= 5
    overconfident = centre[:, None, :] + 0.02 * rng.normal(size=(400, 300, 6))
    assert np.all(_values(dimension_intervals(theta, overconfident, index), "coverage_90") < 0.4)
    unrelated = rng.uniform(size=(400, 1, 6)) + 0.05 * rng.normal(size=(400, 300, 6))
    r = dimension_intervals(theta, unrelated, index)["pearson_r"]
    assert np.all(np.abs([s["value"] for s in r]) < 0.2) and sum(s["ci_low"] < 0 < s["ci_high"] for s in r) >= 5


@pytest.fixture
def tiny_parts(tmp_path):
    from brainrl.policy import LoraConfig, attach_lora
    from brainrl.policy.tiny import tiny_llama, tiny_policy

    model, tokenizer = tiny_policy(seed=0)
    adapter_dir = tmp_path / "adapter"
    attach_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
                ).save_pretrained(adapter_dir)
    base = tiny_llama(tokenizer, seed=0)  # the same random weights, without the adapter
    pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path), model=LengthBrain())
    post = KnownPosterior()
    rng = np.random.default_rng(0)
    maps = pipeline([" ".join(["w"] * int(n)) for n in rng.integers(2, 30, size=60)])
    z = post.summaries(maps)
    post.ood_reference = OODReference.fit(z[:40], z[40:])
    return base, tokenizer, adapter_dir, pipeline, post


def test_end_to_end_base_vs_tuned_with_tiny_components(tmp_path, tiny_parts, capsys):
    base, tokenizer, adapter_dir, pipeline, post = tiny_parts
    config = ValidateConfig(n=6, seed=5, completions_per_prompt=2, batch_prompts=4, n_samples=20,
                            sampling=SamplingConfig(max_new_tokens=12), system_prompt=None)
    result = validate(post, "tiny", tmp_path / "out", adapter=adapter_dir, config=config, model=base,
                      tokenizer=tokenizer, pipeline=pipeline)
    saved = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert saved["n_prompts"] == 6 and set(saved["models"]) == {"base", "tuned"}
    for name in ("requested_vs_decoded.png", "ood_histogram.png", "rank_ecdf_base.png", "rank_ecdf_tuned.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    lines = (tmp_path / "out" / "completions.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 6 * 2
    records = [json.loads(line) for line in lines]
    # a fresh LoRA adapter is the identity and the sampling is identical: tuned texts == base texts
    base_texts = [r["completion"] for r in records if r["model"] == "base"]
    assert base_texts == [r["completion"] for r in records if r["model"] == "tuned"]
    diff = result["difference_tuned_minus_base"]
    assert diff["reward"]["value"] == pytest.approx(0.0, abs=1e-9)
    decoded = result["models"]["base"]
    assert decoded["n_decoded"] + decoded["n_failed"] == 12
    for name in post.param_names:
        dim = decoded["per_dimension"][name]
        assert 0.0 <= dim["coverage_90"]["value"] <= 1.0 and dim["rmse"]["value"] >= 0
        if decoded["n_decoded"] >= 3:
            assert dim["rmse"]["ci_low"] <= dim["rmse"]["value"] + 1e-9
    assert decoded["ood"]["n"] == decoded["n_decoded"] and 0 <= decoded["ood"]["fraction_flagged"] <= 1
    # θ* are the held-out draws, recorded with each completion
    from brainrl.sbi.theta.prompts import build_theta_prompts

    rows = build_theta_prompts(6, seed=5)
    assert records[0]["theta_target"] == rows[records[0]["prompt_id"]]["theta_target"]
    print_validation(result)
    out = capsys.readouterr().out
    assert "valence" in out and "formality" in out and "OOD flagged" in out and "prior-only" in out
    ref = decoded["prior_reference"]
    assert ref["n"] == decoded["n_decoded"] and np.isfinite(ref["reward_gain"]["value"])


def test_missing_adapter_is_a_clear_error(tmp_path, tiny_parts):
    base, tokenizer, _, pipeline, post = tiny_parts
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        validate(post, "tiny", tmp_path / "o", adapter=tmp_path / "none", config=ValidateConfig(n=2), model=base,
                 tokenizer=tokenizer, pipeline=pipeline)


@pytest.mark.slow
def test_cli_validate_with_a_real_fitted_posterior_and_offline_pipeline(tmp_path):
    """Real BayesFlow posterior (tiny fit on hand-made projected data over fsaverage5), `brainrl ood-fit`,
    the θ reward through `Posterior.load`, and `brainrl validate` with espeak + the synthetic model."""
    from brainrl.brain.base import N_VERTICES
    from brainrl.cli.main import main
    from brainrl.policy.tiny import tiny_policy
    from brainrl.sbi.theta.reward import ThetaTargetReward
    from brainrl.sbi.inference.estimator import EstimatorConfig, fit_posterior
    from brainrl.sbi.simulation.projection import Projection

    rng = np.random.default_rng(0)
    n, t, k = 160, 12, 8
    theta = rng.uniform(size=(n, 6)).astype(np.float32)
    loading = rng.normal(size=(6, k))
    coeffs = (theta @ loading)[:, None, :] + 0.3 * rng.normal(size=(n, t, k))
    basis = np.linalg.qr(rng.normal(size=(N_VERTICES, k)))[0].T.astype(np.float32)
    projection = Projection(mean=np.zeros(N_VERTICES, np.float32), std=np.ones(N_VERTICES, np.float32),
                            components=basis, t_max=t)
    arrays = {"coeffs": coeffs.astype(np.float32), "mask": np.ones((n, t), np.float32), "theta": theta,
              "ids": np.arange(n), "projection": projection, "generator": ["hand-made"]}
    post_dir = tmp_path / "post"
    fit_posterior(arrays, post_dir, EstimatorConfig(max_epochs=2, verbose=0, sampler={"method": "euler", "steps": 8},
                                                     min_steps=0, min_steps_per_epoch=1, min_val_draws=1))
    from brainrl.sbi.inference.ood import fit_ood

    ref = fit_ood(post_dir, arrays, post_dir)
    assert ref.meta["reference"] == "held-out" and (post_dir / "ood.npz").is_file()

    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    pipeline = PipelineConfig(cache_dir="")
    reward = ThetaTargetReward(str(post_dir), n_samples=8, ood="downweight", pipeline=pipeline)
    values = reward(None, ["Storm warning issued for the coast tonight.", "Council approves bridge budget."],
                    theta_target=[[0.2] * 6, [0.8] * 6])
    assert all(v is not None and -6 <= v <= 0 for v in values) and all(r is not None for r in reward.last_ood)

    code = main(["validate", "--posterior", str(post_dir), "--base", str(tmp_path / "tiny"), "--n", "4",
                 "--n-samples", "16", "--max-new-tokens", "16", "--cache-dir", "",
                 "--out", str(tmp_path / "val")])
    assert code == 0
    result = json.loads((tmp_path / "val" / "validation.json").read_text())
    assert result["models"]["base"]["n_completions"] == 4 and "tuned" not in result["models"]
    assert result["ood_reference"]["reference"] == "held-out"


def test_prior_reference_matches_hand_computation_and_a_prior_posterior_gains_nothing():
    from brainrl.sbi.theta.validate import ModelDecoding, prior_reference

    names = ("valence", "arousal", "dominance", "subjectivity", "certainty", "formality")
    rng = np.random.default_rng(1)
    n = 300
    targets = rng.uniform(size=(n, 6))
    index = np.arange(n)

    def decoding(draws, ok=None):
        ok = np.ones(n, bool) if ok is None else ok
        return ModelDecoding([""] * n, index, targets, draws, ok, {}, None)

    # by hand: E_U(0,1)[(θ − t)²] = (0.5 − t)² + 1/12 per dimension
    prior_like = rng.uniform(size=(n, 400, 6))  # a posterior equal to the prior, ignoring the text
    ref = prior_reference(decoding(prior_like), names)
    expected_reward = -np.mean(np.sum((0.5 - targets) ** 2 + 1 / 12, axis=1))
    assert ref["reward"]["value"] == pytest.approx(expected_reward, rel=1e-12)
    assert ref["rmse_of_prior_mean"]["valence"]["value"] == pytest.approx(np.sqrt(np.mean((0.5 - targets[:, 0]) ** 2)))
    gain = ref["reward_gain"]
    assert abs(gain["value"]) < 0.03 and gain["ci_low"] < 0 < gain["ci_high"]
    # a posterior concentrated near θ* beats the prior clearly
    informative = targets[:, None, :] + 0.05 * rng.normal(size=(n, 400, 6))
    good = prior_reference(decoding(informative), names)["reward_gain"]
    assert good["ci_low"] > 0.8  # prior reward ≈ −1, informative ≈ −6·2·0.05²
    # failed items are left out of both sides
    ok = np.ones(n, bool)
    ok[:100] = False
    draws = informative.copy()
    draws[:100] = np.nan
    partial = prior_reference(decoding(draws, ok), names)
    assert partial["n"] == 200 and np.isfinite(partial["reward_gain"]["value"])


def test_prior_reference_of_a_point_judge_is_the_prior_mean():
    from brainrl.sbi.theta.validate import ModelDecoding, prior_reference

    targets = np.array([[0.1] * 6, [0.9] * 6, [0.5] * 6, [0.3] * 6])
    estimates = np.full((4, 1, 6), 0.5)  # a judge that always answers the prior mean
    dec = ModelDecoding(["a", "b", "c", "d"], np.arange(4), targets, estimates, np.ones(4, bool), {}, None)
    ref = prior_reference(dec, [str(i) for i in range(6)], point=True)
    assert ref["reward_gain"]["value"] == pytest.approx(0.0, abs=1e-12)
    spread = prior_reference(dec, [str(i) for i in range(6)])
    assert spread["reward_gain"]["value"] == pytest.approx(6 / 12, abs=1e-12)  # no spread vs the prior's variance


def test_paired_squared_error_differences_per_dimension_match_hand_computation():
    from brainrl.sbi.theta.validate import ModelDecoding, paired_differences

    rng = np.random.default_rng(0)
    n, d = 40, 6
    index = np.repeat(np.arange(20), 2)
    targets = rng.uniform(size=(n, d))
    base_est = np.clip(targets + rng.normal(0, 0.3, size=(n, d)), 0, 1)
    tuned_est = base_est.copy()
    tuned_est[:, 0] = targets[:, 0] + 0.5 * (base_est[:, 0] - targets[:, 0])  # only dimension 0 moves closer
    ok = np.ones(n, bool)
    base, tuned = (ModelDecoding([""] * n, index, targets, e[:, None, :], ok, {}, None) for e in (base_est, tuned_est))
    names = [f"d{j}" for j in range(d)]
    diff = paired_differences(base, tuned, names)
    expected = np.mean((tuned_est[:, 0] - targets[:, 0]) ** 2 - (base_est[:, 0] - targets[:, 0]) ** 2)
    assert diff["sq_error"]["d0"]["value"] == pytest.approx(expected, abs=1e-12)
    assert diff["sq_error"]["d0"]["ci_high"] < 0  # a clear improvement is detected
    for name in names[1:]:
        assert diff["sq_error"][name]["value"] == pytest.approx(0.0, abs=1e-12)
    assert diff["reward"]["value"] == pytest.approx(-expected, abs=1e-12)  # the reward is minus the sum over dims


def test_validate_detects_a_theta_following_generator(tmp_path, lexical_posterior):
    """Base = the procedural generator blind to θ* (it writes for a θ of its own), tuned = the procedural
    generator following θ*: through a real fitted posterior of the known lexical channel, and by the text
    judge, the validator must find the tuned one closer to θ*, with CIs that exclude 0."""
    from brainrl.sbi.inference.estimator import Posterior
    from brainrl.sbi.inference.ood import fit_ood
    from brainrl.sbi.simulation.procedural import ProceduralGenerator
    from lexical_channel import LexicalChannel, ThetaIgnoringGenerator

    folder, arrays = lexical_posterior
    post = Posterior.load(folder)
    ood = fit_ood(post, arrays)
    config = ValidateConfig(n=32, seed=5, n_samples=40)
    result = validate(post, "procedural, blind to θ*", tmp_path / "out", config=config, pipeline=LexicalChannel(),
                      ood=ood, generators={"base": ThetaIgnoringGenerator(), "tuned": ProceduralGenerator()})
    assert result["generators"]["tuned"]["backend"] == "procedural"
    judges = {"posterior": result, "text judge": result["independent_judges"]["text_judge"]}
    for name, res in judges.items():
        diff = res["difference_tuned_minus_base"]
        assert diff["n_pairs"] == 32, name
        assert diff["reward"]["ci_low"] > 0, (name, diff["reward"])  # tuned hits θ* better, CI above 0
        better = [d for d, v in diff["rmse"].items() if v["ci_high"] < 0]
        assert len(better) >= 4, (name, {d: round(v["value"], 3) for d, v in diff["rmse"].items()})
        models = res["models"]
        higher_r = [d for d, v in models["tuned"]["per_dimension"].items()
                    if v["pearson_r"]["value"] > models["base"]["per_dimension"][d]["pearson_r"]["value"]]
        assert len(higher_r) >= 5, (name, higher_r)
        # θ*-information: the following generator beats a decoder that ignores the text, the blind one does not
        assert models["tuned"]["prior_reference"]["reward_gain"]["ci_low"] > 0, name
        assert models["base"]["prior_reference"]["reward_gain"]["value"] < \
            models["tuned"]["prior_reference"]["reward_gain"]["ci_low"], name


def test_several_second_posteriors_are_pooled_and_each_reported(tmp_path, tiny_parts, capsys):
    """Fits of one disjoint campaign disagree on out-of-distribution text (docs/theta.md, "Tenth attempt"): with a
    list, the second-posterior judge is their equal mixture (its expected distance the mean of the fits') and each
    fit's own verdict stands beside it, so the fit-to-fit spread is in the report."""
    base, tokenizer, adapter_dir, pipeline, post = tiny_parts
    config = ValidateConfig(n=4, seed=5, completions_per_prompt=2, batch_prompts=4, n_samples=16,
                            sampling=SamplingConfig(max_new_tokens=12), system_prompt=None)
    fits = [KnownPosterior(seed=1), KnownPosterior(seed=2, sd=0.1)]  # two decoders that read the maps differently
    result = validate(post, "tiny", tmp_path / "out", adapter=adapter_dir, config=config, model=base,
                      tokenizer=tokenizer, pipeline=pipeline, second_posterior=fits, judge=None)
    judges = result["independent_judges"]
    assert set(judges) == {"second_posterior", "second_posterior_1", "second_posterior_2"}
    assert judges["second_posterior"]["identity"] == {"pooled": [repr(f) for f in fits]}
    assert judges["second_posterior_2"]["identity"] == repr(fits[1])
    for model in ("base", "tuned"):
        alone = [judges[f"second_posterior_{k}"]["models"][model]["reward"]["value"] for k in (1, 2)]
        assert alone[0] != pytest.approx(alone[1], abs=1e-6)  # the fits do disagree here
        pooled = judges["second_posterior"]["models"][model]["reward"]["value"]
        assert pooled == pytest.approx(np.mean(alone), abs=1e-9)
    from brainrl.policy.tiny import tiny_llama

    one = validate(post, "tiny", tmp_path / "one", adapter=adapter_dir, config=config, model=tiny_llama(tokenizer, seed=0),
                   tokenizer=tokenizer, pipeline=pipeline, second_posterior=fits[0], judge=None)["independent_judges"]
    assert set(one) == {"second_posterior"} and one["second_posterior"]["identity"] == repr(fits[0])
    assert one["second_posterior"]["models"]["base"]["reward"]["value"] == pytest.approx(
        judges["second_posterior_1"]["models"]["base"]["reward"]["value"], abs=1e-9)
    print_validation(result)
    assert "second_posterior_2" in capsys.readouterr().out


def test_cli_second_posterior_repeats():
    from brainrl.cli.main import build_parser

    parse = build_parser().parse_args
    common = ["validate", "--posterior", "p", "--base", "smollm2", "--out", "o"]
    assert parse(common + ["--second-posterior", "a", "--second-posterior", "b"]).second_posterior == ["a", "b"]
    assert parse(common + ["--second-posterior", "a"]).second_posterior == ["a"]
    assert parse(common).second_posterior is None
