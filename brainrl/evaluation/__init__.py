"""Base vs tuned, measured in one place: paired sampling with one seed rule, pluggable scorers (the
rewards as trained, every ROI they use, θ judges, length) and one interval method for every number.

``brainrl evaluate`` (a run's held-out prompts) and ``brainrl compare`` (the HTML report) both call
``evaluate_pair``; see docs/design.md for where it sits.
"""

from brainrl.evaluation.config import EvalConfig
from brainrl.evaluation.core import Column, ColumnSummary, Evaluation, evaluate_pair, evaluate_samples, score_pair
from brainrl.evaluation.sampling import MODELS, PairedSamples, load_pair, sample_pair
from brainrl.evaluation.scorers import (
    CallableScorer,
    LengthScorer,
    ROIScorer,
    Scorer,
    default_scorers,
    pipeline_of,
    reward_rois,
)

__all__ = [
    "CallableScorer",
    "Column",
    "ColumnSummary",
    "EvalConfig",
    "Evaluation",
    "LengthScorer",
    "MODELS",
    "PairedSamples",
    "ROIScorer",
    "Scorer",
    "default_scorers",
    "evaluate_pair",
    "evaluate_samples",
    "load_pair",
    "pipeline_of",
    "reward_rois",
    "sample_pair",
    "score_pair",
]
