"""Composition of rewards: a weighted sum that scores all parts on one shared batch of maps."""

from __future__ import annotations

from typing import Any, Sequence

from brainrl.brain.pipeline import PipelineConfig
from brainrl.rewards.base import Reward


class WeightedSum(Reward):
    """Σ wᵢ·rᵢ per item; ``None`` if any part is ``None`` for that item (the reason is logged).

    Brain rewards inside share the process-wide pipeline, so the texts are synthesised and predicted once.
    For separately logged rewards in GRPO, pass the parts to TRL with ``reward_weights`` instead.
    """

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float] | None = None, name: str | None = None):
        if not rewards:
            raise ValueError("WeightedSum needs at least one reward.")
        weights = list(weights) if weights is not None else [1.0] * len(rewards)
        if len(weights) != len(rewards):
            raise ValueError(f"Got {len(weights)} weights for {len(rewards)} rewards.")
        self.parts = list(rewards)
        self.weights = [float(w) for w in weights]
        super().__init__(name or "+".join(f"{w:g}*{r.__name__}" for r, w in zip(self.parts, self.weights)))

    def bind(self, pipeline: PipelineConfig) -> "WeightedSum":
        return WeightedSum([r.bind(pipeline) for r in self.parts], self.weights, self.__name__)

    def __call__(self, prompts=None, completions: Sequence[Any] = (), **columns: Any) -> list[float | None]:
        self.last_failures = {}
        scores = [part(prompts, completions, **columns) for part in self.parts]
        out: list[float | None] = []
        for i in range(len(completions)):
            values = [s[i] for s in scores]
            if any(v is None for v in values):
                reasons = "; ".join(p.last_failures.get(i, "None") for p, v in zip(self.parts, values) if v is None)
                self._fail(i, f"a part failed: {reasons}")
                out.append(None)
            else:
                out.append(sum(w * v for w, v in zip(self.weights, values)))
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "parts": [p.describe() for p in self.parts], "weights": self.weights}
