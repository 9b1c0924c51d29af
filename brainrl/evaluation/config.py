"""Settings of a base-vs-tuned evaluation (a recipe's ``eval:`` section maps onto ``EvalConfig``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from brainrl.configs import check_range
from brainrl.policy.sampling import SamplingConfig


@dataclass
class EvalConfig:
    """Held-out evaluation: identical sampling and seeds for base (adapter disabled) and tuned.

    What is scored comes from the rewards (each reward, and every ROI they use); ``rois`` only adds ROIs.
    """

    enabled: bool = True
    completions_per_prompt: int = 2
    #: at least this many completions per model (more per prompt when there are few prompts)
    min_completions: int = 32
    #: ROIs reported besides the rewards' own (names or specs, see `brainrl rois list`)
    rois: list[str] = field(default_factory=list)
    #: one more ROI (the older spelling of ``rois: [NAME]``)
    roi: str | None = None
    seed: int = 1234
    #: prompts per generate call; batch b of prompts is sampled with seed ``seed + b`` by both models
    batch_prompts: int = 8
    level: float = 0.95
    #: sampling for evaluation; None = the training sampling (at its starting temperature)
    sampling: SamplingConfig | None = None

    def __post_init__(self) -> None:
        for name in ("completions_per_prompt", "batch_prompts"):
            check_range(f"eval.{name}", getattr(self, name), 1)
        check_range("eval.min_completions", self.min_completions, 0)
        check_range("eval.seed", self.seed, 0)
        check_range("eval.level", self.level, 0.5, 1, low_open=True, high_open=True, fix="e.g. 0.95.")

    def extra_rois(self) -> list[str]:
        return list(self.rois) + ([self.roi] if self.roi and self.roi not in self.rois else [])

    def per_prompt(self, n_prompts: int) -> int:
        """Completions per prompt and model: ``completions_per_prompt``, more if needed to reach
        ``min_completions`` over ``n_prompts`` prompts."""
        return max(self.completions_per_prompt, math.ceil(self.min_completions / max(n_prompts, 1)))
