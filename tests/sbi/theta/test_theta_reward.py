"""θ-target reward: math against a posterior with known draws, batching, None, column errors, prompt
lookup, pickling and the OOD actions."""

import logging
import pickle

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.rewards import load_reward_file
from brainrl.sbi.theta.reward import ThetaTargetReward
from brainrl.sbi.inference.ood import OODReference
from brainrl.sbi.theta.prompts import build_theta_prompts, write_theta_prompts
from tests.helpers import CountingSpeech, LengthBrain
from tests.sbi.theta_fakes import KnownPosterior

TEXTS = ["calm river report today", "council approves the new bridge budget after a long debate",
         "storm warning issued", "market rally lifts shares of small local firms"]


@pytest.fixture
def pipeline(tmp_path):
    return BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path), model=LengthBrain())


@pytest.fixture
def posterior(pipeline):
    post = KnownPosterior()
    rng = np.random.default_rng(0)
    train = [" ".join(["word"] * int(n)) for n in rng.integers(3, 16, size=120)]
    maps = pipeline(train)
    z = post.summaries(maps)
    post.ood_reference = OODReference.fit(z[:80], z[80:])
    return post


def targets(n, seed=0):
    return [list(np.round(np.random.default_rng([seed, i]).uniform(size=6), 2)) for i in range(n)]


def test_expected_and_mean_modes_match_hand_computation(pipeline, posterior):
    theta = targets(len(TEXTS))
    draws = posterior.sample(pipeline(TEXTS), 64, seed=0).astype(float)
    star = np.array(theta)
    expected = -np.mean(np.sum((draws - star[:, None]) ** 2, -1), 1)
    of_mean = -np.sum((draws.mean(1) - star) ** 2, -1)
    r = ThetaTargetReward(posterior, n_samples=64, ood="off").use_pipeline(pipeline)
    assert r(None, TEXTS, theta_target=theta) == pytest.approx(expected, rel=1e-5)
    m = ThetaTargetReward(posterior, mode="mean", n_samples=64, ood="off").use_pipeline(pipeline)
    assert m(None, TEXTS, theta_target=theta) == pytest.approx(of_mean, rel=1e-5)
    # the expected distance charges the posterior spread: E||θ−θ*||² = ||E θ − θ*||² + Σ Var θ
    spread = np.sum(draws.var(1), -1)
    assert np.allclose(expected, of_mean - spread, atol=1e-5)
    assert r.__name__ == "theta_target" and m(None, TEXTS, theta_target=theta) != r(None, TEXTS, theta_target=theta)


def test_dims_subset_and_weights(pipeline, posterior):
    theta = targets(2)
    draws = posterior.sample(pipeline(TEXTS[:2]), 32, seed=0).astype(float)
    star = np.array(theta)
    sel = [0, 5]  # valence, formality
    w = np.array([2.0, 0.5])
    expected = -np.mean(np.sum(w ** 2 * (draws[..., sel] - star[:, None, sel]) ** 2, -1), 1)
    r = ThetaTargetReward(posterior, dims=["valence", "formality"], weights=[2.0, 0.5], n_samples=32, ood="off")
    assert r.use_pipeline(pipeline)(None, TEXTS[:2], theta_target=theta) == pytest.approx(expected, rel=1e-5)
    assert r.__name__ == "theta_target_val_for" and r.worst == pytest.approx(-4.25)
    with pytest.raises(ValueError, match="dims must be"):
        ThetaTargetReward(posterior, dims=["valance"])
    with pytest.raises(ValueError, match="weights"):
        ThetaTargetReward(posterior, dims=["valence"], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="mode"):
        ThetaTargetReward(posterior, mode="median")


def test_one_batched_posterior_call_and_none_for_failed_items(pipeline, posterior, caplog):
    texts = [TEXTS[0], "", "FAILSPEECH here", TEXTS[1], 42]
    r = ThetaTargetReward(posterior, n_samples=16).use_pipeline(pipeline)
    posterior.sample_calls.clear()
    with caplog.at_level(logging.WARNING):
        out = r(None, texts, theta_target=targets(len(texts)))
    assert posterior.sample_calls == [2]  # the two good items, in one call
    assert out[1] is None and out[2] is None and out[4] is None
    assert out[0] is not None and out[3] is not None and out[0] <= 0
    assert set(r.last_failures) == {1, 2, 4} and "speech" in r.last_failures[2]
    assert r.last_ood[0]["p_value"] > 0 and r.last_ood[1] is None


def test_missing_or_invalid_theta_target_names_the_column(pipeline, posterior):
    r = ThetaTargetReward(posterior, ood="off").use_pipeline(pipeline)
    with pytest.raises(ValueError, match="theta_target"):
        r(["p"], [TEXTS[0]])
    with pytest.raises(ValueError, match=r"theta_target\[0\]"):
        r(None, [TEXTS[0]], theta_target=[[0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match=r"theta_target\[1\]"):
        r(None, TEXTS[:2], theta_target=[[0.5] * 6, [0.5, 0.5, 0.5, 0.5, 0.5, 1.5]])
    with pytest.raises(ValueError, match="one per completion"):
        r(None, TEXTS[:2], theta_target=[[0.5] * 6])


def test_prompt_lookup_from_jsonl_plain_and_chat_prompts(tmp_path, pipeline, posterior):
    rows = build_theta_prompts(4, seed=3)
    path = write_theta_prompts(rows, tmp_path / "p.jsonl", tmp_path / "p.txt")
    by_column = ThetaTargetReward(posterior, ood="off", n_samples=8).use_pipeline(pipeline)(
        None, TEXTS, theta_target=[r["theta_target"] for r in rows])
    lookup = ThetaTargetReward(posterior, ood="off", n_samples=8, prompts=path).use_pipeline(pipeline)
    assert lookup([r["prompt"] for r in rows], TEXTS) == pytest.approx(by_column)
    chat = [[{"role": "system", "content": "s"}, {"role": "user", "content": r["prompt"]}] for r in rows]
    completions = [[{"role": "assistant", "content": t}] for t in TEXTS]
    assert lookup(chat, completions) == pytest.approx(by_column)  # TRL's conversational format
    with pytest.raises(ValueError, match="in none of"):
        lookup(["an unknown prompt"] * 4, TEXTS)
    # the plain prompt file is the trainers' format: one prompt per line, same texts
    from brainrl.train.recipe import read_prompts

    assert read_prompts(tmp_path / "p.txt") == [r["prompt"] for r in rows]


def test_pickling_drops_loaded_posterior_and_pipeline(tmp_path, pipeline, posterior):
    r = ThetaTargetReward(str(tmp_path / "posterior"), ood="downweight", n_samples=8)
    r._posterior = posterior  # as if loaded in this process
    r.use_pipeline(pipeline)
    clone = pickle.loads(pickle.dumps(r))
    assert clone._posterior is None and clone._pipeline is None and clone.posterior_dir == str(tmp_path / "posterior")
    assert (clone.dims, clone.mode, clone.ood, clone.n_samples) == (r.dims, r.mode, r.ood, r.n_samples)
    with pytest.raises(FileNotFoundError, match="approximator.keras"):
        clone.posterior  # reloads lazily from the folder (here: none there)
    injected = pickle.loads(pickle.dumps(ThetaTargetReward(posterior, ood="off")))
    assert injected._posterior is not None  # an injected object travels with the reward


def test_out_of_distribution_item_flagged_and_actions_apply(pipeline, posterior):
    texts = [TEXTS[1], " ".join(["far"] * 400)]  # 400 words: ~30x the training maps' activity
    theta = targets(2)
    base = ThetaTargetReward(posterior, n_samples=16, ood="log").use_pipeline(pipeline)
    logged = base(None, texts, theta_target=theta)
    assert base.last_ood[1]["flagged"] and not base.last_ood[0]["flagged"]
    assert base.last_ood[1]["distance"] > 10 * base.last_ood[0]["distance"]
    off = ThetaTargetReward(posterior, n_samples=16, ood="off").use_pipeline(pipeline)
    assert off(None, texts, theta_target=theta) == pytest.approx(logged)  # log changes nothing
    down = ThetaTargetReward(posterior, n_samples=16, ood="downweight").use_pipeline(pipeline)
    weighted = down(None, texts, theta_target=theta)
    assert weighted[0] == pytest.approx(logged[0])
    assert down.worst <= weighted[1] < logged[1]  # pulled toward the worst reward, never raised
    drop = ThetaTargetReward(posterior, n_samples=16, ood="none").use_pipeline(pipeline)
    dropped = drop(None, texts, theta_target=theta)
    assert dropped[0] == pytest.approx(logged[0]) and dropped[1] is None
    assert "out of distribution" in drop.last_failures[1]


def test_reward_file_builds_the_reward(tmp_path):
    (fn,) = load_reward_file("rewards/theta_target.py", posterior=str(tmp_path), ood="log", n_samples=4,
                             prompts=["recipes/data/theta_train.jsonl"])
    assert isinstance(fn, ThetaTargetReward) and fn.ood == "log" and fn.posterior_dir == str(tmp_path)
    assert len(fn.prompt_table()) == 120


def test_theta_recipes_load_and_carry_the_generator_system_prompt():
    from brainrl.sbi.simulation.prompts import GENERATOR_SYSTEM_PROMPT
    from brainrl.train import load_recipe

    for name, trainer in (("offline_theta_awsft", "awsft"), ("offline_theta_grpo", "grpo")):
        recipe = load_recipe(f"recipes/{name}.yaml")
        assert recipe.trainer == trainer and recipe.data.system_prompt == GENERATOR_SYSTEM_PROMPT
        assert recipe.rewards[0].path == "rewards/theta_target.py" and not recipe.eval.enabled
