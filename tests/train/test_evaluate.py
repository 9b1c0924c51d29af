import json

import numpy as np
import pytest

from brainrl.policy.tiny import tiny_policy
from brainrl.train.awsft import AWSFTTrainer
from brainrl.train.config import EvalConfig
from brainrl.train.evaluate import cluster_bootstrap, evaluate_run

from helpers import PROMPTS, tiny_recipe, token_count_reward


def test_cluster_bootstrap_ci_covers_mean_and_pairs():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(20), 2)
    base = rng.normal(0, 1, 40)
    tuned = base + 0.5
    stat = cluster_bootstrap(base, clusters, 500, seed=1)
    assert stat["ci_low"] < stat["mean"] < stat["ci_high"] and stat["n"] == 40
    diff = cluster_bootstrap(tuned, clusters, 500, seed=1, paired=base)
    assert diff["mean"] == pytest.approx(0.5) and diff["ci_high"] - diff["ci_low"] < 1e-9  # paired: no spread
    outlier = base.copy()
    outlier[0] = 1e3  # one extreme map moves the mean, not the median
    med = cluster_bootstrap(outlier, clusters, 200, seed=1, statistic="median")
    assert med["mean"] == pytest.approx(np.median(outlier))
    with_nan = base.copy()
    with_nan[0] = np.nan
    assert cluster_bootstrap(with_nan, clusters, 100, seed=1)["n"] == 39


def test_evaluate_run_end_to_end_on_tiny_policy(tmp_path):
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("describe the river\nexplain the storm\ntell a story about a poet\nwrite news about a city\n")
    recipe = tiny_recipe(tmp_path, steps=1)
    recipe.data.heldout = str(heldout)
    recipe.eval = EvalConfig(completions_per_prompt=2, min_completions=8, bootstrap=200, batch_prompts=4)
    model, tok = tiny_policy(seed=0)
    AWSFTTrainer(recipe, model=model, tokenizer=tok, reward_funcs=[token_count_reward], train_prompts=PROMPTS).train()
    base, tok = tiny_policy(seed=0)
    result = evaluate_run(recipe.output_dir, model=base, tokenizer=tok)
    assert result["completions_per_model"] == 8 and result["completions_per_prompt"] == 2
    for name in ("base", "tuned"):
        stats = result["models"][name]
        assert set(stats) >= {"roi_mean", "selectivity", "global_mean", "completion_tokens_mean"}
        n_ok = 8 - result["failed_maps"][name]
        assert stats["roi_mean"]["n"] == n_ok  # failed maps are counted, not zero-filled
    assert result["kl_to_base_per_token"] > 0
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["difference_tuned_minus_base"].keys() == {"roi", "selectivity", "global"}
    assert saved["median_difference_tuned_minus_base"].keys() == {"roi", "selectivity"}
    assert 0.0 <= saved["paired_win_rate"]["roi"] <= 1.0
    assert "broca_minus_global" in saved["rewards_as_trained"]["tuned"]
