"""Issue 4, done-when: with the tribev2 test double, a full training step runs through the TRIBE worker,
and switching a recipe from the synthetic model to `tribe` is a change of its `brain` section only."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from brainrl.brain.pipeline import PipelineConfig
from brainrl.policy.sampling import SamplingConfig
from brainrl.policy.tiny import tiny_policy
from brainrl.rewards.loading import RewardConfig
from brainrl.train.awsft import AWSFTTrainer
from brainrl.train.config import AWSFTConfig, LoggingConfig, RecipeConfig
from brainrl.train.runs import read_jsonl

ROOT = Path(__file__).resolve().parents[3]
DOUBLES = ROOT / "tests" / "doubles"


def test_awsft_step_scores_through_the_tribe_worker(tmp_path, checkpoint_dir):
    pytest.importorskip("espeakng_loader")
    synthetic = RecipeConfig(
        name="tribe-step", seed=1, output_dir=str(tmp_path / "run"), trainer="awsft",
        rewards=[RewardConfig(path=str(ROOT / "rewards" / "broca.py"))],
        brain=PipelineConfig(cache_dir=""),
        awsft=AWSFTConfig(steps=1, prompts_per_step=1, completions_per_prompt=3, learning_rate=5e-3,
                          warmup_steps=0, checkpoint_every=1),
        sampling=SamplingConfig(max_new_tokens=8),
        logging=LoggingConfig(report_to=[], progress=False),
    )
    # the switch: only the brain section changes
    tribe = dataclasses.replace(synthetic, brain=PipelineConfig(
        model="tribe", cache_dir="",
        model_kwargs={"worker": True, "python": sys.executable, "worker_pythonpath": [str(DOUBLES)],
                      "checkpoint_dir": str(checkpoint_dir), "cache_folder": str(tmp_path / "tribe-cache"),
                      "device": "cpu"}))
    model, tokenizer = tiny_policy(seed=0)
    trainer = AWSFTTrainer(tribe, model=model, tokenizer=tokenizer, train_prompts=["tell a story about a river"])
    try:
        trainer.train()
    finally:
        for fn in trainer.reward_funcs:
            pipeline = getattr(fn, "_pipeline", None)
            if pipeline is not None:
                pipeline.close()
    run = tmp_path / "run"
    (metrics,) = read_jsonl(run / "metrics.jsonl")
    completions = read_jsonl(run / "completions.jsonl")
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] == "finished"
    assert card["recipe"]["brain"]["model"] == "tribe" and card["brain_pipeline"]["pipeline"]["model"] == "tribe"
    scored = [c for c in completions if c["reward"] is not None]
    failed = [c for c in completions if c["reward"] is None]
    # every non-empty completion was scored through the worker; empty ones are None, never 0
    assert all(c["completion"].strip() for c in scored)
    assert all(not c["completion"].strip() for c in failed)
    assert scored, "no completion was scored through the TRIBE worker"
    assert metrics["step"] == 1
