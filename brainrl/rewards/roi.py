"""ROI rewards: statistics of predicted activity in Destrieux regions."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import BrainMap, mean_frame_float64
from brainrl.brain.pipeline import PipelineConfig
from brainrl.rewards.base import BrainReward

STATISTICS = ("mean", "minus_global", "minus_reference")
DIRECTIONS = ("maximize", "minimize")


class ROIReward(BrainReward):
    """Reward = a statistic of the predicted activity in an ROI, averaged over its vertices and frames.

    - ``mean``: the ROI mean (the anchor experiment's statistic; rewards global shifts too);
    - ``minus_global``: ROI mean minus the whole-cortex mean (selectivity against a global shift);
    - ``minus_reference``: ROI mean minus the mean of ``reference`` ROIs' means (a contrast).

    ``direction="minimize"`` negates the value. ``roi`` is a preset name (``brainrl rois list``), an
    ``ROI`` object, or a spec string such as ``"labels:G_front_inf-Opercular,G_front_inf-Triangul@left"``.
    """

    def __init__(
        self,
        roi: Any = "broca",
        statistic: str = "mean",
        reference: Sequence[Any] = (),
        direction: str = "maximize",
        name: str | None = None,
        pipeline: PipelineConfig | None = None,
    ):
        from brainrl.cortex.rois import get_roi

        if statistic not in STATISTICS:
            raise ValueError(f"Unknown ROI statistic {statistic!r}; choose one of {', '.join(STATISTICS)}.")
        if direction not in DIRECTIONS:
            raise ValueError(f"Unknown direction {direction!r}; choose 'maximize' or 'minimize'.")
        if statistic == "minus_reference" and not reference:
            raise ValueError("statistic='minus_reference' needs reference=[...] ROIs to subtract.")
        self.roi = get_roi(roi)  # resolves now, so a bad name fails at construction with suggestions
        self.reference = tuple(get_roi(r) for r in reference)
        self.statistic = statistic
        self.direction = direction
        default = f"{self.roi.name}_{statistic}" + ("_min" if direction == "minimize" else "")
        super().__init__(name or default, pipeline)
        self._masks: dict[str, np.ndarray] | None = None

    def _get_masks(self) -> dict[str, np.ndarray]:
        if self._masks is None:
            from brainrl.cortex.stats import averaging_matrix

            roi = self.roi.mask()
            regions = [roi, "global"] + [r.mask() for r in self.reference]
            # one (20,484, n) averaging matrix, built once: ROI, cortex, then each reference ROI
            self._masks = {"roi": roi, "weights": averaging_matrix(regions)}
        return self._masks

    def value(self, data: np.ndarray) -> float:
        """The signed statistic of one (T, 20,484) array (before the direction is applied)."""
        from brainrl.cortex import stats

        maps = stats.as_maps(data)
        if maps.ndim != 2:
            raise ValueError(f"ROIReward scores one (T, 20,484) map at a time, got {maps.shape}.")
        return self._statistic(mean_frame_float64(maps) @ self._get_masks()["weights"])

    def _statistic(self, means: np.ndarray) -> float:
        """The statistic from the region means (ROI, cortex, then each reference ROI)."""
        if self.statistic == "mean":
            return float(means[0])
        if self.statistic == "minus_global":
            return float(means[0] - means[1])
        return float(means[0] - means[2:].mean())

    def score_map(self, brain_map: BrainMap, index: int, columns: dict[str, Any]) -> float:
        # region means straight from the map (a surrogate's low-rank map answers without building 20,484 vertices)
        means = brain_map.region_means(self._get_masks()["weights"])
        if not np.isfinite(means).all():
            raise ValueError(f"the predicted map has NaN/inf values in the regions {self.__name__} averages; "
                             "its brain model produced non-finite activity for this text")
        value = self._statistic(means)
        return -value if self.direction == "minimize" else value

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "roi": {"name": self.roi.name, "labels": list(self.roi.labels), "hemisphere": self.roi.hemisphere,
                    "n_vertices": int(self._get_masks()["roi"].sum())},
            "statistic": self.statistic,
            "reference": [r.name for r in self.reference],
            "direction": self.direction,
            "pipeline": None if self.pipeline_config is None else vars(self.pipeline_config),
        }
