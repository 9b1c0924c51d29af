"""Audited training on a surrogate reward: agreement logging, refit, teacher fallback, stop, the AWSFT
hook, and held-out evaluation by the teacher. Student and teacher are real (a student distilled from
espeak + the synthetic model, tests/brain/surrogate_helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainrl.brain.pipeline import PipelineConfig
from brainrl.brain.surrogate import Student
from brainrl.policy.tiny import tiny_policy
from brainrl.rewards import ROIReward
from brainrl.train.audit import AuditConfig, AuditedReward, AuditStop
from brainrl.train.awsft import AWSFTTrainer
from brainrl.train.config import EvalConfig
from brainrl.train.evaluate import evaluate_run
from brainrl.train.runs import read_jsonl

from tests.brain.surrogate_helpers import distilled, teacher_config, varied_texts

from helpers import PROMPTS, tiny_recipe


def surrogate_config(folder) -> PipelineConfig:
    return PipelineConfig(speech="text-only", model="surrogate", model_kwargs={"path": str(folder)}, cache_dir="")


def wrong_student(tmp_path: Path) -> Path:
    """The distilled student with its head negated: it ranks every text backwards (a drifted surrogate)."""
    folder, _ = distilled()
    good = Student.load(folder)
    bad = Student(features=good.features, reducer=good.reducer, x_mean=good.x_mean, x_scale=good.x_scale,
                  coef=-good.coef,
                  intercept=good.intercept, components=good.components, map_mean=good.map_mean, alpha=good.alpha,
                  train_x=good.train_x, train_c=good.train_c, card=dict(good.card))
    bad.save(tmp_path / "wrong")
    return tmp_path / "wrong"


def batch(n_groups: int = 3, per_group: int = 4, seed: int = 7):
    texts = varied_texts(n_groups * per_group, seed=seed)
    prompts = [f"prompt {i // per_group}" for i in range(len(texts))]
    return prompts, texts


def audited(folder, tmp_path, **config) -> AuditedReward:
    student = ROIReward("broca", "minus_global").bind(surrogate_config(folder))
    teacher = student.bind(teacher_config())
    cfg = AuditConfig(enabled=True, **{"every": 1, "groups": 3, "window": 1, **config})
    return AuditedReward(student, teacher, cfg, tmp_path / "audit.jsonl", tmp_path, seed=0)


def test_agreement_is_logged_and_audited_groups_get_teacher_values(tmp_path):
    folder, _ = distilled()
    reward = audited(folder, tmp_path, groups=1)
    prompts, texts = batch()
    values = reward(prompts, texts)
    row = read_jsonl(tmp_path / "audit.jsonl")[0]
    assert row["audited_items"] == 4 and row["audited_groups"] == 1 and row["action"] == "none"
    assert row["r"] > 0.5 and 0.0 <= row["concordant"] <= 1.0
    teacher = reward.teacher(prompts, texts)
    student = reward.student(prompts, texts)
    audited_group = [i for i, p in enumerate(prompts) if values[i] == pytest.approx(teacher[i], abs=1e-9)]
    assert len(audited_group) == 4 and len({prompts[i] for i in audited_group}) == 1
    others = [i for i in range(len(texts)) if i not in audited_group]
    np.testing.assert_allclose([values[i] for i in others], [student[i] for i in others], rtol=1e-6)


def test_drift_triggers_a_refit_that_restores_agreement(tmp_path):
    reward = audited(wrong_student(tmp_path), tmp_path, min_r=0.5)
    prompts, texts = batch(seed=7)
    reward(prompts, texts)
    first = reward.last_audit
    assert first["r"] < 0 and first["action"] == "refit" and first["refits"] == 0
    card = json.loads((tmp_path / "surrogate-refit-01" / "card.json").read_text())
    assert card["refit"]["step"] == 1 and card["refit"]["fresh_pairs"] == len(texts)
    prompts2, texts2 = batch(seed=8)
    reward(prompts2, texts2)
    second = reward.last_audit
    assert second["r"] > 0.7 and second["action"] == "none" and second["refits"] == 1
    rows = read_jsonl(tmp_path / "audit.jsonl")
    assert [r["action"] for r in rows] == ["refit", "none"]


def test_each_audited_pair_enters_the_refits_once(tmp_path):
    reward = audited(wrong_student(tmp_path), tmp_path, min_r=1.0)  # every audit refits
    start = len(reward.surrogate().student.train_x)
    sizes = []
    for seed in (7, 8):
        prompts, texts = batch(seed=seed)
        reward(prompts, texts)
        sizes.append(len(texts))
    cards = [json.loads((tmp_path / f"surrogate-refit-0{n}" / "card.json").read_text()) for n in (1, 2)]
    assert [c["refit"]["fresh_pairs"] for c in cards] == sizes
    assert len(reward.surrogate().student.train_x) == start + sum(sizes)


def test_a_single_small_audit_is_logged_but_not_acted_on(tmp_path):
    """One group of 4 completions says little about agreement: with min_items 8 the first audit only logs,
    the second (8 pooled items) acts."""
    reward = audited(wrong_student(tmp_path), tmp_path, min_r=0.5, groups=1, window=3, min_items=8)
    for seed in (7, 8):
        prompts, texts = batch(seed=seed)
        reward(prompts, texts)
    rows = read_jsonl(tmp_path / "audit.jsonl")
    assert [r["pooled_items"] for r in rows] == [4, 8]
    assert rows[0]["pooled_r"] < 0.5 and [r["action"] for r in rows] == ["none", "refit"]


def test_drift_can_fall_back_to_the_teacher_or_stop(tmp_path):
    folder = wrong_student(tmp_path)
    reward = audited(folder, tmp_path / "a", min_r=0.5, on_drift="teacher")
    prompts, texts = batch()
    values = reward(prompts, texts)
    assert reward.mode == "teacher" and reward.last_audit["action"] == "teacher"
    np.testing.assert_allclose(values, reward.teacher(prompts, texts), rtol=1e-9)
    later = varied_texts(5, seed=11)
    np.testing.assert_allclose(reward(None, later), reward.teacher(None, later), rtol=1e-9)
    stopper = audited(folder, tmp_path / "b", min_r=0.5, on_drift="stop")
    with pytest.raises(AuditStop, match="disagrees with its teacher"):
        stopper(prompts, texts)


def test_audit_config_is_validated():
    with pytest.raises(ValueError, match="on_drift"):
        AuditConfig(on_drift="ignore")
    with pytest.raises(ValueError, match="every"):
        AuditConfig(every=0)
    with pytest.raises(ValueError, match="min_items"):
        AuditConfig(min_items=2)


def test_awsft_on_an_audited_surrogate_reward_and_teacher_evaluation(tmp_path):
    folder, _ = distilled()
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("describe the river\nexplain the storm\n")
    recipe = tiny_recipe(tmp_path, steps=2)
    recipe.brain = surrogate_config(folder)
    recipe.audit = AuditConfig(enabled=True, every=1, groups=1)
    recipe.data.heldout = str(heldout)
    recipe.eval = EvalConfig(completions_per_prompt=2, min_completions=4, batch_prompts=2)
    model, tok = tiny_policy(seed=0)
    trainer = AWSFTTrainer(recipe, model=model, tokenizer=tok, train_prompts=PROMPTS)
    assert isinstance(trainer.reward_funcs[0], AuditedReward)
    trainer.train()
    run = Path(recipe.output_dir)
    rows = read_jsonl(run / "audit.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(r["audited_items"] == 3 for r in rows)
    card = json.loads((run / "run_card.json").read_text())
    assert card["rewards"][0]["audited"] and card["recipe"]["audit"]["enabled"]
    base, tok = tiny_policy(seed=0)
    result = evaluate_run(run, model=base, tokenizer=tok)
    assert result["brain_pipeline"]["model"]["model"] == "synthetic"  # held-out maps come from the teacher


def test_audit_needs_a_surrogate(tmp_path):
    recipe = tiny_recipe(tmp_path, steps=1)
    recipe.audit = AuditConfig(enabled=True)
    model, tok = tiny_policy(seed=0)
    with pytest.raises(ValueError, match="surrogate"):
        AWSFTTrainer(recipe, model=model, tokenizer=tok, train_prompts=PROMPTS)


def test_surrogate_recipe_is_the_demo_but_for_brain_and_audit():
    from brainrl.train import load_recipe

    root = Path(__file__).resolve().parents[2] / "recipes"
    demo, surrogate = (load_recipe(root / name).to_dict() for name in ("offline_broca.yaml",
                                                                        "offline_broca_surrogate.yaml"))
    assert [k for k in demo if demo[k] != surrogate[k]] == ["name", "output_dir", "brain", "audit"]
    assert surrogate["brain"]["model"] == "surrogate" and surrogate["audit"]["enabled"]


def test_grpo_on_an_audited_surrogate_reward(tmp_path):
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.rewards.loading import RewardConfig
    from brainrl.train.config import GRPORecipeConfig, LoggingConfig, RecipeConfig
    from brainrl.train.grpo import train_grpo

    folder, _ = distilled()
    root = Path(__file__).resolve().parents[2]
    recipe = RecipeConfig(name="tiny-grpo-audit", seed=1, output_dir=str(tmp_path / "run"), trainer="grpo",
                          rewards=[RewardConfig(path=str(root / "rewards" / "broca.py"))],
                          brain=surrogate_config(folder), audit=AuditConfig(enabled=True, every=1, groups=1),
                          grpo=GRPORecipeConfig(steps=2, prompts_per_step=2, num_generations=2, learning_rate=1e-3,
                                                checkpoint_every=2),
                          sampling=SamplingConfig(max_new_tokens=6), logging=LoggingConfig(report_to=[], progress=False))
    model, tok = tiny_policy(seed=0)
    train_grpo(recipe, model=model, tokenizer=tok, train_prompts=PROMPTS)
    rows = read_jsonl(tmp_path / "run" / "audit.jsonl")
    assert len(rows) >= 2 and all(r["audited_items"] == 2 and r["mode_after"] == "student" for r in rows)
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert card["rewards"][0]["audited"]
