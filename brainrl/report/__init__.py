"""Base-vs-tuned comparison: statistics, figures and a self-contained HTML report.

A leaf package: it imports ``brainrl.cortex`` (ROIs, ROI averages, surface plots) and nothing that
trains or generates; ``brainrl compare`` (brainrl/cli/compare.py) produces the completions and maps
through ``brainrl.evaluation``, which takes its intervals from ``report.stats``. Inside: ``stats`` (the
numbers) and ``data`` (the shared types) are imported by ``compare`` (the builder and writer) and the
renderers ``figures``, ``summary`` and ``html``, never the other way round.
"""

from brainrl.report.compare import build_comparison, default_roi_names, read_metrics, write_report
from brainrl.report.data import Comparison, ExtractedModel, ModelOutputs, ReportConfig
from brainrl.report.stats import ComparisonStats, Interval, ModelSample, ROIComparison, StatsConfig, compare_samples

__all__ = [
    "Comparison",
    "ComparisonStats",
    "ExtractedModel",
    "Interval",
    "ModelOutputs",
    "ModelSample",
    "ROIComparison",
    "ReportConfig",
    "StatsConfig",
    "build_comparison",
    "compare_samples",
    "default_roi_names",
    "read_metrics",
    "write_report",
]
