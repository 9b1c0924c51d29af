"""Brain rewards as TRL-compatible batch callables.

A reward is called as ``reward(prompts, completions, **columns) -> list[float | None]``, exactly as
TRL's GRPOTrainer calls reward functions. It is picklable (the pipeline is rebuilt lazily in each
process), carries a ``__name__`` (the metric key), and returns ``None`` with a logged reason for an item
it could not score, never a silent 0.
"""

from __future__ import annotations

import abc
import copy
import logging
from typing import Any, Sequence

from brainrl.brain.base import BrainMap, Failed
from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

log = logging.getLogger(__name__)


def completion_text(completion: Any) -> str:
    """The text of a completion: a plain string, or chat messages (the assistant turns' content,
    where content may itself be a list of ``{"type": "text", "text": ...}`` parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)):
        parts = []
        for message in completion:
            if not isinstance(message, dict):
                raise TypeError(f"Chat messages must be dicts with 'role' and 'content'; got {type(message).__name__}.")
            if message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content", "")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(str(content))
        return "\n".join(parts)
    raise TypeError(
        f"A completion must be a string or a list of chat messages; got {type(completion).__name__}."
    )


class Reward(abc.ABC):
    """Base of every brainrl reward: naming, batch calling convention and failure bookkeeping."""

    def __init__(self, name: str):
        self.__name__ = name
        self.last_failures: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.__name__!r})"

    @abc.abstractmethod
    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                 ) -> list[float | None]:
        """One reward per completion, ``None`` for an item that could not be scored."""

    def _fail(self, index: int, reason: str) -> None:
        self.last_failures[index] = reason
        log.warning("reward %s: item %d scored None: %s", self.__name__, index, reason)

    def bind(self, pipeline: PipelineConfig) -> "Reward":
        """A copy of this reward that uses ``pipeline`` (rewards without a brain ignore it)."""
        return self

    def describe(self) -> dict[str, Any]:
        """Reward definition for run cards."""
        return {"name": self.__name__, "type": type(self).__name__}


class BrainReward(Reward):
    """A reward computed from the predicted brain map of each completion.

    Subclasses implement ``score_map(brain_map, index, columns) -> float``; texts go through the shared
    pipeline in one batch, failures of any stage become ``None``.
    """

    def __init__(self, name: str, pipeline: PipelineConfig | None = None):
        super().__init__(name)
        self.pipeline_config = pipeline
        self._pipeline: BrainPipeline | None = None

    # pickling: ship the config, not the models
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pipeline"] = None
        return state

    def bind(self, pipeline: PipelineConfig) -> "BrainReward":
        bound = copy.copy(self)
        bound.pipeline_config = pipeline
        bound._pipeline = None
        bound.last_failures = {}
        return bound

    @property
    def pipeline(self) -> BrainPipeline:
        if self._pipeline is None:
            self._pipeline = BrainPipeline.shared(self.pipeline_config)
        return self._pipeline

    def use_pipeline(self, pipeline: BrainPipeline) -> "BrainReward":
        """Score with an existing pipeline object (tests, notebooks)."""
        self._pipeline = pipeline
        self.pipeline_config = pipeline.config
        return self

    def maps(self, completions: Sequence[Any]) -> list[BrainMap | Failed]:
        texts: list[str] = []
        bad: dict[int, str] = {}
        for i, completion in enumerate(completions):
            try:
                texts.append(completion_text(completion))
            except TypeError as err:
                bad[i] = str(err)
                texts.append("")
        predictions = self.pipeline(texts)
        return [Failed(bad[i]) if i in bad else p for i, p in enumerate(predictions)]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                 ) -> list[float | None]:
        self.last_failures = {}
        rewards: list[float | None] = []
        for i, prediction in enumerate(self.maps(completions)):
            if isinstance(prediction, Failed):
                self._fail(i, prediction.reason)
                rewards.append(None)
                continue
            try:
                value = float(self.score_map(prediction, i, columns))
            except Exception as err:
                self._fail(i, f"{type(err).__name__}: {err}")
                rewards.append(None)
                continue
            if value != value:  # NaN
                self._fail(i, "reward is NaN")
                rewards.append(None)
                continue
            rewards.append(value)
        return rewards

    @abc.abstractmethod
    def score_map(self, brain_map: BrainMap, index: int, columns: dict[str, Any]) -> float:
        """Score one map; ``columns`` are the dataset columns TRL passes (lists, one entry per item)."""
