"""A custom contrast and a weighted sum, defined with no change to the library.

- a custom ROI from Destrieux labels (left inferior frontal gyrus, all three parts);
- its contrast against bilateral auditory cortex;
- plus a small weight on plain left-Broca selectivity.
"""

from brainrl.cortex.rois import ROI
from brainrl.rewards import ROIReward, WeightedSum

left_ifg = ROI.from_labels(
    "left_ifg", ["G_front_inf-Opercular", "G_front_inf-Triangul", "G_front_inf-Orbital"], hemisphere="left"
)
contrast = ROIReward(left_ifg, statistic="minus_reference", reference=["auditory"])
selectivity = ROIReward("broca", statistic="minus_global")

reward = WeightedSum([contrast, selectivity], weights=[1.0, 0.5], name="ifg_vs_auditory")
