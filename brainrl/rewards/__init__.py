"""Reward machinery: TRL-compatible batch reward callables over predicted brain maps.

Experiment-specific choices (which ROI, which contrast) live in the top-level ``rewards/`` folder.
"""

from brainrl.rewards.base import BrainReward, Reward, completion_text
from brainrl.rewards.compose import WeightedSum
from brainrl.rewards.form import HeadlineForm
from brainrl.rewards.loading import RewardLoadError, RewardConfig, describe_reward, load_reward_file, load_rewards
from brainrl.rewards.roi import ROIReward

__all__ = [
    "BrainReward",
    "HeadlineForm",
    "Reward",
    "ROIReward",
    "RewardLoadError",
    "RewardConfig",
    "WeightedSum",
    "completion_text",
    "describe_reward",
    "load_reward_file",
    "load_rewards",
]
