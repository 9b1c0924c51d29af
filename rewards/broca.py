"""Left Broca (pars opercularis + pars triangularis), selectivity against the whole-cortex mean.

Copy this file to make your own reward: change the ROI (a preset from `brainrl rois list`, or
ROI.from_labels(...)), the statistic ("mean", "minus_global", "minus_reference") or the direction.
"""

from brainrl.rewards import ROIReward

reward = ROIReward("broca", statistic="minus_global")
