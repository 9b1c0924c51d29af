"""Shared builders for the trainer tests: a tiny local policy, plain callable rewards, small recipes."""

from __future__ import annotations

from pathlib import Path

from brainrl.brain.pipeline import PipelineConfig
from brainrl.rewards.loading import RewardConfig
from brainrl.train.config import AWSFTConfig, LoggingConfig, RecipeConfig
from brainrl.policy.sampling import SamplingConfig

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["tell a story about a river", "explain the weather", "describe a small garden", "write news about music",
           "tell a story about a teacher", "describe the city at night"]


def token_count_reward(prompts, completions, completion_ids=None, **columns):
    """Reward = number of completion tokens (a plain TRL-style callable, no brain)."""
    return [float(len(ids)) for ids in completion_ids]


def letter_share_reward(prompts, completions, **columns):
    """Share of ASCII letters in the text; None for an empty completion (exercises dropping)."""
    out = []
    for text in completions:
        out.append(None if not text else sum(c.isascii() and c.isalpha() for c in text) / len(text))
    return out


def tiny_recipe(tmp_path, steps=2, **awsft) -> RecipeConfig:
    return RecipeConfig(
        name="tiny", seed=3, output_dir=str(tmp_path / "run"), trainer="awsft",
        rewards=[RewardConfig(path=str(ROOT / "rewards" / "broca.py"))],
        brain=PipelineConfig(cache_dir=""),
        awsft=AWSFTConfig(steps=steps, prompts_per_step=2, completions_per_prompt=3, learning_rate=5e-3,
                          warmup_steps=1, checkpoint_every=2, **awsft),
        sampling=SamplingConfig(max_new_tokens=8),
        logging=LoggingConfig(report_to=[], progress=False),
    )
