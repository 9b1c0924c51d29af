"""Base vs tuned on the same prompts: paired samples → scorer columns → one interval per column.

The interval is ``brainrl.report.stats.cluster_interval`` (the prompt is the unit; base and tuned paired
by prompt; Student's t with P − 1 degrees of freedom), for every column alike: the rewards, the ROIs,
judges and length. ``evaluate_pair`` samples and scores; ``Evaluation.to_dict`` is what ``eval.json``
and ``summary.json`` hold.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from brainrl.evaluation.sampling import MODELS, PairedSamples, sample_pair
from brainrl.evaluation.scorers import ScoredColumns
from brainrl.report.stats import Interval, cluster_interval

log = logging.getLogger(__name__)

INTERVAL_METHOD = ("cluster-robust t interval over prompts (Student's t, P − 1 degrees of freedom); tuned − base "
                   "paired by prompt; failed items left out")


@dataclass
class Column:
    """One scored quantity, per completion, for both models (NaN = the item failed)."""

    name: str
    kind: str
    base: np.ndarray
    tuned: np.ndarray
    failures: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ColumnSummary:
    name: str
    kind: str
    base: Interval
    tuned: Interval
    diff: Interval  # tuned − base
    n: dict[str, int]  # scored items per model
    failed: dict[str, int]
    win_rate: float | None  # share of same-seed pairs where tuned > base
    failure_reasons: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def interval(i: Interval) -> dict[str, Any]:
            return {"estimate": _finite(i.estimate), "ci": [_finite(i.low), _finite(i.high)]}

        return {"name": self.name, "kind": self.kind, "base": interval(self.base), "tuned": interval(self.tuned),
                "diff": interval(self.diff), "n": self.n, "failed": self.failed, "paired_win_rate": self.win_rate,
                "failure_reasons": self.failure_reasons}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def score_pair(samples: PairedSamples, scorers: Sequence[Any],
               prompt_columns: dict[str, Sequence[Any]] | None = None, progress: bool = False) -> list[Column]:
    """Every scorer's columns on both models' completions, plus completion tokens."""
    from tqdm.auto import tqdm

    prompts = samples.prompts_of()
    columns = {key: [list(values)[i] for i in samples.prompt_index.tolist()]
               for key, values in (prompt_columns or {}).items()}
    for key, values in (prompt_columns or {}).items():
        if len(values) != len(samples.prompts):
            raise ValueError(f"prompt column {key!r} has {len(values)} entries for {len(samples.prompts)} prompts.")
    out: list[Column] = []
    present = [m for m in MODELS if m in samples.texts]
    missing = np.full(samples.n, math.nan)  # a base-only run: every tuned value is absent
    bar = tqdm(total=len(scorers) * len(present), desc="score (brain maps, rewards)", unit="pass",
               disable=not progress)  # brain models take minutes on many completions: not a silent stretch
    for scorer in scorers:
        scored: dict[str, ScoredColumns] = {}
        for m in present:
            scored[m] = scorer.score(prompts, samples.texts[m], columns)
            bar.update(1)
        for name in scored["base"].values:
            out.append(Column(name, scorer.kind, scored["base"].values[name],
                              scored["tuned"].values[name] if "tuned" in scored else missing,
                              {m: scored[m].failures.get(name, []) for m in present if scored[m].failures.get(name)}))
    bar.close()
    out.append(Column("tokens", "length", samples.tokens["base"], samples.tokens.get("tuned", missing)))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"Scorer column names must be unique; got {names}. Rename a reward (`name:` in the recipe).")
    return out


def summarise(column: Column, prompt_index: np.ndarray, level: float = 0.95) -> ColumnSummary:
    base, tuned = column.base, column.tuned
    both = np.isfinite(base) & np.isfinite(tuned)
    return ColumnSummary(
        column.name, column.kind,
        base=cluster_interval(base, prompt_index, level=level),
        tuned=cluster_interval(tuned, prompt_index, level=level),
        diff=cluster_interval(tuned, prompt_index, paired=base, level=level),
        n={m: int(np.isfinite(v).sum()) for m, v in (("base", base), ("tuned", tuned))},
        failed={m: int((~np.isfinite(v)).sum()) for m, v in (("base", base), ("tuned", tuned))},
        win_rate=float(np.mean(tuned[both] > base[both])) if both.any() else None,
        failure_reasons=column.failures,
    )


@dataclass
class Evaluation:
    """Paired samples, their scored columns and one interval summary per column."""

    samples: PairedSamples
    columns: list[Column]
    summaries: list[ColumnSummary]
    level: float
    seconds: float = 0.0

    def summary(self, name: str) -> ColumnSummary:
        for s in self.summaries:
            if s.name == name:
                return s
        raise KeyError(f"No column {name!r}; have {[s.name for s in self.summaries]}.")

    def values(self, name: str, model: str) -> np.ndarray:
        for c in self.columns:
            if c.name == name:
                return getattr(c, model)
        raise KeyError(f"No column {name!r}.")

    def to_dict(self) -> dict[str, Any]:
        s = self.samples
        return {
            "prompts": len(s.prompts),
            "completions_per_prompt": int(s.settings["per_prompt"]),
            "completions_per_model": s.n,
            **{k: v for k, v in s.settings.items() if k != "per_prompt"},
            "interval": {"method": INTERVAL_METHOD, "level": self.level, "unit": "prompt"},
            "kl_to_base_per_token": s.kl_to_base,
            "kl_estimator": "exact full-vocabulary KL(tuned||base) on the tuned completions' tokens",
            "scores": [summary.to_dict() for summary in self.summaries],
            "generation_s": s.seconds,
            "seconds": self.seconds,
        }

    def completion_rows(self) -> list[dict[str, Any]]:
        """One row per completion pair: prompt, both texts and every column's two values."""
        rows = []
        prompts = self.samples.prompts_of()
        for i in range(self.samples.n):
            row: dict[str, Any] = {"prompt": prompts[i], **{m: texts[i] for m, texts in self.samples.texts.items()}}
            for c in self.columns:
                row[c.name] = {"base": _finite(c.base[i]), "tuned": _finite(c.tuned[i])}
            rows.append(row)
        return rows


def evaluate_samples(samples: PairedSamples, scorers: Sequence[Any], *, level: float = 0.95,
                     prompt_columns: dict[str, Sequence[Any]] | None = None, progress: bool = False) -> Evaluation:
    started = time.perf_counter()
    columns = score_pair(samples, scorers, prompt_columns, progress=progress)
    summaries = [summarise(c, samples.prompt_index, level) for c in columns]
    return Evaluation(samples, columns, summaries, level, samples.seconds + time.perf_counter() - started)


def evaluate_pair(model, tokenizer, prompts: Sequence[str], scorers: Sequence[Any], *, sampling, per_prompt: int,
                  seed: int, batch_prompts: int = 8, system: str | None = None, level: float = 0.95,
                  prompt_columns: dict[str, Sequence[Any]] | None = None, kl: bool = True,
                  progress: bool = True, generation=None) -> Evaluation:
    """Sample both models (``sample_pair``), score every completion (``scorers``), summarise each column."""
    samples = sample_pair(model, tokenizer, prompts, sampling, per_prompt=per_prompt, seed=seed,
                          batch_prompts=batch_prompts, system=system, kl=kl, progress=progress,
                          generation=generation)
    return evaluate_samples(samples, scorers, level=level, prompt_columns=prompt_columns, progress=progress)
