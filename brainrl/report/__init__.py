"""Base-vs-tuned comparison: statistics, figures and a self-contained HTML report.

A leaf package: it imports ``brainrl.cortex`` (ROIs, ROI averages, surface plots) and nothing that
trains or generates; ``brainrl compare`` (brainrl/cli/compare.py) produces the completions and maps.
"""

from brainrl.report.compare import (
    Comparison,
    ExtractedModel,
    ModelOutputs,
    ReportConfig,
    build_comparison,
    default_roi_names,
    read_metrics,
    write_report,
)
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
