"""Cycle consistency, the text-only baseline: an inverse LLM reads a headline block and scores the six
properties; the scores are compared with the θ that generated the block (same metrics as SBI)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from brainrl.sbi.simulation.generators import ChatGenerator, GeneratorConfig
from brainrl.sbi.simulation.parse import parse_scores
from brainrl.sbi.simulation.prior import N_PARAMS, PARAM_NAMES
from brainrl.sbi.simulation.prompts import evaluator_messages, few_shot_evaluator_messages, retry_messages
from brainrl.sbi.simulation.simulator import ask_until_parsed, attempt_seed

log = logging.getLogger(__name__)


@dataclass
class CycleConfig:
    """Which evaluator LLM, how many attempts per block. ``kwargs`` of a local evaluator default to
    greedy-ish settings (low temperature) since rating is not a creative task.

    ``few_shot`` (two worked ratings before the request) and ``feedback`` (show the evaluator its broken
    answer on the retry, else resample with a new seed) default to what suits the backend: ``None``
    means few-shot without feedback for ``local`` (small models echo corrections), the zero-shot prompt
    with feedback for API models. The parsing is strict either way."""

    evaluator: GeneratorConfig = field(default_factory=lambda: GeneratorConfig(
        "local", {"model": "smollm2", "temperature": 0.2, "max_new_tokens": 60, "batch_size": 16,
                  "prefix_cache": True}))
    max_attempts: int = 3
    seed: int = 0
    few_shot: bool | None = None
    feedback: bool | None = None


@dataclass
class CycleResult:
    scores: np.ndarray  # (n, 6), NaN rows where the evaluator never produced a valid answer
    reasons: list[str | None]  # None for valid rows, else why the row failed

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.scores).any(axis=1)


class CycleEvaluator:
    """Scores headline blocks with strict parsing (``name: number`` ×6 in [0, 1]) and bounded retries."""

    def __init__(self, generator: ChatGenerator, max_attempts: int = 3, seed: int = 0, few_shot: bool = False,
                 feedback: bool = True):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {max_attempts}.")
        self.generator, self.max_attempts, self.seed = generator, int(max_attempts), int(seed)
        self.few_shot, self.feedback = bool(few_shot), bool(feedback)

    @classmethod
    def from_config(cls, config: CycleConfig) -> "CycleEvaluator":
        local = config.evaluator.name == "local"
        few_shot = local if config.few_shot is None else config.few_shot
        feedback = (not local) if config.feedback is None else config.feedback
        return cls(config.evaluator.build(), config.max_attempts, config.seed, few_shot, feedback)

    def _messages(self, block: Sequence[str] | str):
        return few_shot_evaluator_messages(block) if self.few_shot else evaluator_messages(block)

    def evaluate(self, blocks: Sequence[Sequence[str] | str], ids: Sequence[int] | None = None) -> CycleResult:
        ids = list(range(len(blocks))) if ids is None else [int(i) for i in ids]
        scores = np.full((len(blocks), N_PARAMS), np.nan)
        reasons: list[str | None] = [None] * len(blocks)
        conversations = {i: self._messages(b) for i, b in enumerate(blocks)}

        def retry(i: int, reply: str, reason: str):
            return retry_messages(self._messages(blocks[i]), reply, reason, "exactly six 'name: number' lines")

        accepted, failed = ask_until_parsed(
            self.generator, conversations, lambda i, a: attempt_seed(self.seed, ids[i], a),
            lambda i, reply: parse_scores(reply, PARAM_NAMES), self.max_attempts,
            retry if self.feedback else None, lambda i: f"cycle item {ids[i]}")
        for i, values in accepted.items():
            scores[i] = values
        for i, last in failed.items():
            reasons[i] = f"no valid scores after {self.max_attempts} attempts; last: {last}"
            log.warning("cycle item %d failed: %s", ids[i], reasons[i])
        return CycleResult(scores, reasons)
