"""Left Broca mean activity: the anchor experiment's statistic (also rewards a global shift)."""

from brainrl.rewards import ROIReward

reward = ROIReward("broca", statistic="mean")
