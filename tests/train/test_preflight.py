"""Training that cannot be silently wrong: every recipe field validated, every reward loaded and called on
a test batch before the policy loads, a mismatched --resume refused, one-line errors from every entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import brainrl.policy
from brainrl.cli.main import main as brainrl_main
from brainrl.rewards import RewardLoadError, load_reward_file
from brainrl.train import load_recipe, run_recipe
from brainrl.train.__main__ import main as train_main
from brainrl.train.preflight import RewardCheckError, check_resume, preflight, recipe_differences
from brainrl.train.recipe import RecipeError

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "offline_broca.yaml"
GRPO_RECIPE = ROOT / "recipes" / "offline_broca_grpo.yaml"


@pytest.mark.parametrize("override, field", [
    ("awsft.update_batch_size=-1", "awsft.update_batch_size"),
    ("awsft.max_grad_norm=-1", "awsft.max_grad_norm"),
    ("awsft.max_grad_norm=0", "awsft.max_grad_norm"),
    ("awsft.learning_rate=-1e-3", "awsft.learning_rate"),
    ("awsft.beta=-0.1", "awsft.beta"),
    ("awsft.warmup_steps=-2", "awsft.warmup_steps"),
    ("awsft.min_lr_ratio=1.5", "awsft.min_lr_ratio"),
    ("awsft.weight_decay=-0.01", "awsft.weight_decay"),
    ("awsft.keep_checkpoints=-1", "awsft.keep_checkpoints"),
    ("grpo.learning_rate=-1e-4", "grpo.learning_rate"),
    ("grpo.beta=-0.04", "grpo.beta"),
    ("grpo.max_grad_norm=-1", "grpo.max_grad_norm"),
    ("grpo.checkpoint_every=0", "grpo.checkpoint_every"),
    ("grpo.loss_type=dapoo", "grpo.loss_type"),
    ("grpo.scale_rewards=sometimes", "grpo.scale_rewards"),
    ("rewards.0.weight=.nan", "rewards[0].weight"),
    ("rewards.0.weight=.inf", "rewards[0].weight"),
    ("sampling.temperature=.nan", "sampling.temperature"),
    ("logging.log_every=0", "logging.log_every"),
    ("logging.completions_per_step=-5", "logging.completions_per_step"),
    ("eval.completions_per_prompt=0", "eval.completions_per_prompt"),
    ("eval.level=1.5", "eval.level"),
    ("brain.max_words=0", "brain.max_words"),
    ("policy.lora.alpha=0", "policy.lora.alpha"),
    ("seed=-1", "seed"),
])
def test_every_bad_field_fails_at_load_naming_the_field(override, field):
    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPE, [override])
    message = str(info.value)
    assert f"recipe.{field}" in message and ("got" in message or "not one of" in message) and "\n" not in message


def test_bad_field_is_one_line_from_brainrl_train_and_python_m(capsys):
    assert brainrl_main(["train", "--recipe", str(RECIPE), "--set", "awsft.update_batch_size=-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("brainrl train: error: recipe.awsft.update_batch_size must be >= 0; got -1.")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert train_main(["--recipe", str(RECIPE), "--set", "awsft.max_grad_norm=-1"]) == 2
    err = capsys.readouterr().err
    assert "brainrl.train: error: recipe.awsft.max_grad_norm must be > 0" in err and "Traceback" not in err
    with pytest.raises(RecipeError):  # --verbose: the traceback
        train_main(["--recipe", str(RECIPE), "--set", "awsft.max_grad_norm=-1", "--verbose"])


def _policy_must_not_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the policy was loaded before the recipe was checked")

    monkeypatch.setattr(brainrl.policy, "load_policy", refuse)
    monkeypatch.setattr("brainrl.train.awsft.load_policy", refuse)


def _recipe_with_reward(tmp_path, source: str | None, kwargs: dict | None = None, trainer_recipe=RECIPE):
    reward = tmp_path / "my_reward.py"
    if source is not None:
        reward.write_text(source)
    spec = {"path": str(reward), "weight": 1.0}
    if kwargs:
        spec["kwargs"] = kwargs
    recipe = load_recipe(trainer_recipe, [f"output_dir={tmp_path / 'run'}", "brain.cache_dir=''"])
    from brainrl.rewards.loading import RewardConfig

    recipe.rewards = [RewardConfig(**spec)]
    return recipe


@pytest.mark.parametrize("source, kwargs, error, match", [
    ("import numpy\nx = 1 / 0\nreward = None\n", None, RewardLoadError,
     r"my_reward.py failed to import \(line 2\): ZeroDivisionError"),
    ("def make_reward(scale=1.0):\n    return lambda prompts, completions, **kw: [scale] * len(completions)\n",
     {"scal": 2.0}, RewardLoadError, r"make_reward\(\) takes no keyword 'scal'\. Did you mean 'scale'\?"),
    ("def make_reward(**kw):\n    raise TypeError(f'unknown option {sorted(kw)}')\n", {"scale": 2.0}, RewardLoadError,
     r"make_reward\(scale=\.\.\.\) failed \(line 2\): TypeError: unknown option"),
    (None, None, FileNotFoundError, r"my_reward.py' not found"),
    ("def reward(prompts, completions, **kw):\n    return [len(c) / 0 for c in completions]\n", None, RewardCheckError,
     r"Reward 'reward' raised on a test batch before training: ZeroDivisionError"),
    ("def reward(prompts, completions, **kw):\n    return [1.0]\n", None, RewardCheckError,
     r"returned 1 values for 2 completions"),
    ("def reward(prompts, completions, **kw):\n    return ['high'] * len(completions)\n", None, RewardCheckError,
     r"returned str 'high'"),
    ("def reward(prompts, completions, **kw):\n    return [None] * len(completions)\n", None, RewardCheckError,
     r"scored None for every test completion"),
])
def test_reward_problems_fail_fast_before_the_policy_loads(tmp_path, monkeypatch, capsys, source, kwargs, error, match):
    _policy_must_not_load(monkeypatch)
    recipe = _recipe_with_reward(tmp_path, source, kwargs)
    started = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        run_recipe(recipe)
    assert time.perf_counter() - started < 30  # seconds, not the minutes a policy load takes
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_broken_reward_is_one_line_from_the_command_line(tmp_path, capsys, monkeypatch):
    _policy_must_not_load(monkeypatch)
    bad = tmp_path / "bad.py"
    bad.write_text("from brainrl.rewards import ROIReward\nreward = ROIReward('brocca')\n")
    code = brainrl_main(["train", "--recipe", str(RECIPE), "--set", f"rewards.0.path={bad}",
                         "--set", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "bad.py failed to import (line 2)" in err and "broca" in err


def test_grpo_settings_and_eval_roi_are_checked_before_the_policy(tmp_path, monkeypatch):
    _policy_must_not_load(monkeypatch)
    recipe = load_recipe(GRPO_RECIPE, [f"output_dir={tmp_path / 'g'}", "grpo.extra={generation_batch_size: 3}"])
    with pytest.raises(RecipeError, match="generation_batch_size"):
        run_recipe(recipe)
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path / 'a'}", "eval.roi=brocca"])
    with pytest.raises(RecipeError, match=r"recipe\.eval\.roi: .*'brocca'.*broca"):
        run_recipe(recipe)


def test_preflight_returns_working_rewards_for_both_trainers(tmp_path):
    for path in (RECIPE, GRPO_RECIPE):
        recipe = load_recipe(path, [f"output_dir={tmp_path / path.stem}", "brain.cache_dir=''"])
        funcs, weights = preflight(recipe)
        assert [f.__name__ for f in funcs] == ["broca_minus_global"] and weights == [1.0]


def _fake_run(tmp_path, recipe):
    out = Path(recipe.output_dir)
    out.mkdir(parents=True)
    (out / "run_card.json").write_text(json.dumps({"recipe": recipe.to_dict()}))
    return out


def test_resume_refuses_a_recipe_that_differs_from_the_run(tmp_path, monkeypatch):
    _policy_must_not_load(monkeypatch)
    started = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}"])
    _fake_run(tmp_path, started)
    same = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "logging.report_to=[]", "eval.seed=99"])
    check_resume(same)  # logging and evaluation may change on resume
    changed = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "awsft.learning_rate=0.01",
                                   "rewards.0.path=rewards/broca_mean.py"])
    assert [d[0] for d in recipe_differences(started.to_dict(), changed.to_dict())] == [
        "awsft.learning_rate", "rewards[0].path"]
    run_lr = re.escape(str(started.awsft.learning_rate))
    with pytest.raises(RecipeError, match=rf"--resume: the recipe differs .*awsft\.learning_rate: run {run_lr}, now 0\.01"):
        run_recipe(changed, resume=True)
    # and a run folder is never silently reused without --resume / --overwrite
    with pytest.raises(RecipeError, match="already holds a run"):
        run_recipe(same)


def test_output_dir_naming_a_file_is_one_line(tmp_path, monkeypatch):
    _policy_must_not_load(monkeypatch)
    target = tmp_path / "taken.txt"
    target.write_text("x")
    with pytest.raises(RecipeError, match=r"output_dir .*taken\.txt' is a file"):
        run_recipe(load_recipe(RECIPE, [f"output_dir={target}"]))


def test_reward_file_precedence_reward_over_make_reward(tmp_path):
    both = tmp_path / "both.py"
    both.write_text("def reward(prompts, completions, **kw):\n    return [1.0] * len(completions)\n"
                    "def make_reward(value=2.0):\n"
                    "    def made(prompts, completions, **kw):\n        return [value] * len(completions)\n"
                    "    return made\n")
    (plain,) = load_reward_file(both)
    (made,) = load_reward_file(both, value=3.0)
    assert plain(None, ["a"]) == [1.0] and made(None, ["a"]) == [3.0]


def _cli_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_python_m_brainrl_train_prints_one_line_for_a_missing_reward(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "brainrl.train", "--recipe", str(RECIPE),
                           "--set", "rewards.0.path=rewards/nope.py", "--set", f"output_dir={tmp_path / 'r'}"],
                          capture_output=True, text=True, cwd=ROOT, env=_cli_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "brainrl.train: error: Reward file 'rewards/nope.py' not found." in proc.stderr


def test_accelerate_launch_prints_one_line_for_a_bad_field(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--quiet", "--config_file", "recipes/accelerate/cpu.yaml",
                           "-m", "brainrl.train", "--recipe", str(RECIPE), "--set", "awsft.update_batch_size=-1"],
                          capture_output=True, text=True, cwd=ROOT, env=_cli_env(), timeout=300)
    assert proc.returncode != 0
    assert "brainrl.train: error: recipe.awsft.update_batch_size must be >= 0; got -1." in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_policy_that_cannot_load_is_found_before_anything_loads(tmp_path, monkeypatch):
    _policy_must_not_load(monkeypatch)
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path / 'r'}", "policy.model=smollm3"])
    with pytest.raises(RecipeError, match=r"recipe\.policy\.model: Policy 'smollm3' is neither"):
        run_recipe(recipe)
