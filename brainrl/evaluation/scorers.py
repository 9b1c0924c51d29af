"""Scorers: what a base-vs-tuned evaluation measures on each completion.

A scorer turns the completions (and their prompts and per-prompt columns) into named per-completion
columns, ``None`` for an item it could not score::

    scorer.score(prompts, texts, columns) -> {column_name: [float | None, ...]}

- ``CallableScorer``: any reward callable ``fn(prompts, completions, **columns)`` (a recipe's rewards,
  TRL-style functions), one column named ``fn.__name__``. A θ judge is the same shape returning a dict
  of named statistics ``{"theta_rmse": [...], ...}``; each becomes a column ``<judge name>:<key>``.
- ``ROIScorer``: the mean predicted activity in each ROI (over vertices and frames) from the brain
  pipeline, and ROI − whole-cortex mean (selectivity); ``reward_rois`` lists every ROI a reward uses.
- ``LengthScorer``: words per completion (completion tokens come from the sampler).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

GLOBAL = "global"


class Scorer(Protocol):
    """What ``score_pair`` calls; ``kind`` groups the columns in tables (reward, roi, judge, length)."""

    kind: str

    def score(self, prompts: list[str], texts: list[str], columns: dict[str, list[Any]]
              ) -> dict[str, list[float | None]]: ...


@dataclass
class ScoredColumns:
    """Columns of one scorer on one model's completions, with the reasons of failed items."""

    values: dict[str, np.ndarray]  # name -> (N,) float, NaN = failed
    failures: dict[str, list[str]] = field(default_factory=dict)  # name -> reasons (first few)


def _as_array(values: Sequence[Any], n: int, where: str) -> np.ndarray:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"{where} returned {len(values)} values for {n} completions; one per completion is needed.")
    out = np.full(n, math.nan)
    for i, v in enumerate(values):
        if v is not None:
            out[i] = float(v)
    return out


class CallableScorer:
    """A reward or judge callable as a scorer (``kind`` "reward" or "judge")."""

    def __init__(self, fn: Callable, kind: str = "reward", name: str | None = None):
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable; a scorer wraps fn(prompts, completions, **columns).")
        self.fn = fn
        self.kind = kind
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def __repr__(self) -> str:
        return f"CallableScorer({self.name!r}, kind={self.kind!r})"

    def score(self, prompts, texts, columns) -> ScoredColumns:
        n = len(texts)
        try:
            out = self.fn(prompts=prompts, completions=texts, **columns)
        except Exception as err:  # one failing scorer must not lose the other columns of a long evaluation
            reason = f"{type(err).__name__}: {err}"
            log.warning("scorer %s failed on every item: %s", self.name, reason)
            return ScoredColumns({self.name: np.full(n, math.nan)}, {self.name: [reason]})
        failures = list(dict.fromkeys(getattr(self.fn, "last_failures", {}).values()))[:5]
        if isinstance(out, dict):
            values = {f"{self.name}:{key}": _as_array(v, n, f"{self.name}[{key!r}]") for key, v in out.items()}
            return ScoredColumns(values, {k: failures for k in values if np.isnan(values[k]).any()})
        values = _as_array(out, n, self.name)
        return ScoredColumns({self.name: values}, {self.name: failures} if np.isnan(values).any() else {})


def reward_rois(funcs: Iterable[Callable]) -> list[Any]:
    """Every ROI the rewards use: an ``ROIReward``'s ROI and references, parts of a ``WeightedSum``, and
    anything a custom reward lists in a ``rois`` attribute. In order, without repeats (by name)."""
    from brainrl.cortex.rois import get_roi

    found: dict[str, Any] = {}

    def visit(fn: Any) -> None:
        for roi in [getattr(fn, "roi", None), *getattr(fn, "reference", ()), *getattr(fn, "rois", ())]:
            if roi is not None and not isinstance(roi, (bool, int, float)):
                resolved = get_roi(roi)
                found.setdefault(resolved.name, resolved)
        for part in getattr(fn, "parts", ()):
            visit(part)

    for fn in funcs:
        visit(fn)
    return list(found.values())


def pipeline_of(funcs: Iterable[Callable]):
    """The brain pipeline config the first brain reward is bound to (None when no reward uses a brain)."""
    from brainrl.rewards.base import BrainReward

    for fn in funcs:
        for part in [fn, *getattr(fn, "parts", ())]:
            if isinstance(part, BrainReward) and part.pipeline_config is not None:
                return part.pipeline_config
    return None


class ROIScorer:
    """Mean predicted activity per ROI and ROI − global, from the (shared, cached) brain pipeline, so the
    maps the rewards already predicted are not predicted again."""

    kind = "roi"

    def __init__(self, rois: Sequence[Any], pipeline: Any = None, *, pipeline_object: Any = None):
        from brainrl.cortex.rois import get_roi

        resolved = {r.name: r for r in (get_roi(x) for x in rois)}
        if GLOBAL not in resolved:
            resolved[GLOBAL] = get_roi(GLOBAL)
        self.rois = resolved
        self.pipeline_config = pipeline
        self._pipeline = pipeline_object

    @property
    def pipeline(self):
        if self._pipeline is None:
            from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

            self._pipeline = BrainPipeline.shared(self.pipeline_config or PipelineConfig())
        return self._pipeline

    def score(self, prompts, texts, columns) -> ScoredColumns:
        from brainrl.brain.base import BrainMap
        from brainrl.cortex.stats import ROIAverager

        averager = ROIAverager(self.rois)
        names = list(averager.names)
        values = np.full((len(texts), len(names)), math.nan)
        reasons: list[str] = []
        for i, prediction in enumerate(self.pipeline(list(texts))):
            if isinstance(prediction, BrainMap):
                values[i] = averager.means(prediction.data)
            else:
                reasons.append(str(getattr(prediction, "reason", prediction)))
        out = {f"roi:{name}": values[:, k] for k, name in enumerate(names)}
        g = names.index(GLOBAL)
        for k, name in enumerate(names):
            if name != GLOBAL:
                out[f"roi:{name} − {GLOBAL}"] = values[:, k] - values[:, g]
        reasons = list(dict.fromkeys(reasons))[:5]
        return ScoredColumns(out, {k: reasons for k in out} if reasons else {})


class LengthScorer:
    """Words per completion (length drives many brain statistics; always worth reading beside them)."""

    kind = "length"

    def score(self, prompts, texts, columns) -> ScoredColumns:
        return ScoredColumns({"words": np.array([len(t.split()) for t in texts], np.float64)})


def default_scorers(rewards: Sequence[Callable] = (), *, judges: Sequence[Callable] = (), extra_rois: Sequence[Any] = (),
                    pipeline: Any = None) -> list[Any]:
    """Each reward, the ROIs the rewards use (plus ``extra_rois``), each judge, and length."""
    scorers: list[Any] = [CallableScorer(fn, "reward") for fn in rewards]
    rois = reward_rois(rewards)
    names = {r.name for r in rois}
    from brainrl.cortex.rois import get_roi

    rois += [r for r in (get_roi(x) for x in extra_rois) if r.name not in names]
    if rois:
        scorers.append(ROIScorer(rois, pipeline if pipeline is not None else pipeline_of(rewards)))
    scorers += [CallableScorer(fn, "judge") for fn in judges]
    scorers.append(LengthScorer())
    return scorers
