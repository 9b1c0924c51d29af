"""The report's data types, shared by the builder (compare.py) and the renderers (figures, html, summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainrl.cortex.rois import ROI
from brainrl.report.stats import ComparisonStats, ModelSample, StatsConfig


@dataclass
class ModelOutputs:
    """One model's completions, in order: the text, the prompt it answers, and its map (or a failure)."""

    label: str
    texts: list[str]
    prompts: list[str]
    maps: list[Any]

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.prompts) == len(self.maps)):
            raise ValueError(f"{self.label}: texts ({len(self.texts)}), prompts ({len(self.prompts)}) and maps "
                             f"({len(self.maps)}) must have one entry per completion.")


@dataclass
class ExtractedModel:
    """Per-completion quantities of the usable completions of one model."""

    label: str
    texts: list[str]
    prompts: list[str]
    strata: np.ndarray  # (N,) index into the shared prompt list
    n_words: np.ndarray  # (N,)
    roi_values: np.ndarray  # (N, K) ROI mean over vertices and frames
    timecourses: list[np.ndarray]  # N arrays (T_i, K)
    mean_maps: np.ndarray  # (N, 20,484) float32, each completion's map averaged over frames
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.texts)

    def sample(self) -> ModelSample:
        return ModelSample(self.roi_values, self.n_words, self.strata)


@dataclass
class ReportConfig:
    """What the report compares and shows."""

    target: str | ROI = "broca"
    #: ROI names/specs to compare (default: every preset, see ``default_roi_names``)
    rois: list[str] | None = None
    #: ROIs whose time courses are drawn besides the target (default: the 3 largest |Δ| among the rest)
    timecourse_rois: list[str] | None = None
    stats: StatsConfig = field(default_factory=StatsConfig)
    n_examples: int = 4
    title: str = "Base vs tuned generator: predicted cortical response"
    #: time points need at least this many completions per model to be drawn in the time courses
    min_timecourse_n: int = 5


@dataclass
class Comparison:
    """Everything the figures and the report are made of."""

    base: ExtractedModel
    tuned: ExtractedModel
    prompts: list[str]
    roi_names: list[str]
    stats: ComparisonStats
    config: ReportConfig
    seconds: float = 0.0
