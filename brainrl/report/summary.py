"""The report's plain-language verdict and ``summary.json``, both derived from the numbers only.

Every sentence is chosen by a rule on CIs and q-values (listed in docs/report.md), so the text cannot
claim more than the statistics show: a target gain whose CI includes the global shift is called a
global shift, and a gain that vanishes once length is accounted for is called length-driven.
"""

from __future__ import annotations

from typing import Any

from brainrl.report.stats import ComparisonStats, Interval, ROIComparison

from brainrl.report.data import Comparison

#: below this many completions per model the report warns that CIs are wide and unstable
RECOMMENDED_N = 32
WHOLE_CORTEX = ("global", "left_hemisphere", "right_hemisphere")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:+.{digits}g}"


def fmt_ci(interval: Interval, digits: int = 3) -> str:
    return f"{fmt(interval.estimate, digits)} [{fmt(interval.low, digits)}, {fmt(interval.high, digits)}]"


def _direction(interval: Interval) -> str:
    if interval.low > 0:
        return "up"
    if interval.high < 0:
        return "down"
    return "unclear"


def verdict(stats: ComparisonStats) -> list[str]:
    """Sentences summarising the comparison, each backed by a number shown next to it."""
    level = f"{int(round(stats.config.level * 100))}%"
    alpha = stats.config.fdr_alpha
    out: list[str] = []
    names = [r.name for r in stats.rows]
    target = stats.row(stats.target) if stats.target in names else None
    glob = stats.row("global") if "global" in names else None

    if target is not None:
        d = target.diff
        kind = {"up": "rose", "down": "fell", "unclear": "did not change measurably"}[_direction(d)]
        tail = ("; its CI excludes 0" if d.excludes_zero() else "; its CI includes 0, so no change is established")
        q = f", q = {target.q_value:.3g}" if target.q_value is not None else ""
        out.append(f"The target ROI '{target.name}' {kind}: tuned − base = {fmt_ci(d)} ({level} CI), Hedges' g = "
                   f"{fmt(target.hedges_g.estimate, 2)}{q}{tail}.")
    if glob is not None:
        out.append(f"The whole-cortex mean changed by {fmt_ci(glob.diff)}"
                   + (" (CI excludes 0: a global shift)." if glob.diff.excludes_zero() else " (CI includes 0)."))
    sel = stats.selectivity
    if sel is not None and target is not None:
        s = sel.diff
        if _direction(s) == "up":
            out.append(f"Selectivity ({sel.name}) rose by {fmt_ci(s)}: the target gained more than the cortex as a "
                       "whole, so the change is not only a global shift.")
        elif _direction(s) == "down":
            out.append(f"Selectivity ({sel.name}) fell by {fmt_ci(s)}: the target gained less than the cortex as a "
                       "whole.")
        elif target.diff.excludes_zero():
            out.append(f"Selectivity ({sel.name}) changed by {fmt_ci(s)}, a CI that includes 0: the target's change "
                       "cannot be told apart from the global shift.")
        else:
            out.append(f"Selectivity ({sel.name}) changed by {fmt_ci(s)} (CI includes 0).")
        regions = sorted((r for r in stats.rows if r.name not in WHOLE_CORTEX),
                         key=lambda r: -r.diff.estimate)
        rank = [r.name for r in regions].index(target.name) + 1 if target.name in [r.name for r in regions] else None
        if rank is not None:
            out.append(f"By tuned − base, the target ranks {rank} of {len(regions)} regional ROIs (1 = largest rise; "
                       "a rank alone is not a test).")
    family = stats.family()
    up = sum(1 for r in family if r.q_value is not None and r.q_value < alpha and r.diff.estimate > 0)
    down = sum(1 for r in family if r.q_value is not None and r.q_value < alpha and r.diff.estimate < 0)
    n_whole = sum(1 for r in family if r.name in WHOLE_CORTEX)
    tested = (f"{len(family)} ROIs: {len(family) - n_whole} regional, {n_whole} whole-cortex" if n_whole
              else f"{len(family)} ROIs")
    out.append(f"At FDR q < {alpha:g} (Benjamini–Hochberg over {tested}), {up} rose, {down} fell and "
               f"{len(family) - up - down} showed no established change.")
    if stats.length is not None:
        ln = stats.length
        words = (f"Tuned completions average {ln.tuned_mean_words:.1f} words, base {ln.base_mean_words:.1f} "
                 f"(difference {fmt_ci(ln.diff)}).")
        if target is not None and target.length_adjusted is not None and target.length_adjusted.low == target.length_adjusted.low:
            adj = target.length_adjusted
            if target.diff.excludes_zero() and not adj.excludes_zero():
                words += (f" With length (and prompt) in the regression, the model effect on the target is "
                          f"{fmt_ci(adj)}, which includes 0: the difference may be explained by completion length.")
            elif adj.excludes_zero():
                words += (f" With length (and prompt) in the regression, the model effect on the target remains "
                          f"{fmt_ci(adj)}: it is not explained by length.")
            else:
                words += f" Length-adjusted model effect on the target: {fmt_ci(adj)}."
        elif ln.note:
            words += f" Length check not possible: {ln.note}."
        out.append(words)
    n_min = min(stats.n_base, stats.n_tuned)
    if n_min < RECOMMENDED_N:
        out.append(f"Only {n_min} completions per model were compared (fewer than {RECOMMENDED_N}): intervals are "
                   "wide and the bootstrap is unreliable at this size.")
    return out


def headline(stats: ComparisonStats) -> dict[str, Any]:
    """The few numbers a reader looks for first."""
    def entry(row: ROIComparison | None, field: str = "diff") -> dict[str, Any] | None:
        if row is None:
            return None
        interval = getattr(row, field)
        if interval is None:
            return None
        return {"estimate": interval.estimate, "ci": [interval.low, interval.high],
                "excludes_zero": interval.excludes_zero()}

    names = [r.name for r in stats.rows]
    target = stats.row(stats.target) if stats.target in names else None
    glob = stats.row("global") if "global" in names else None
    return {
        "target": stats.target,
        "target_diff": entry(target),
        "global_diff": entry(glob),
        "selectivity_diff": entry(stats.selectivity),
        "target_length_adjusted": entry(target, "length_adjusted"),
        "selective_gain": bool(stats.selectivity is not None and stats.selectivity.diff.low > 0),
    }


def summary_record(comparison: Comparison, *, settings: dict[str, Any] | None = None,
                   run_card: dict[str, Any] | None = None, figures: dict[str, str] | None = None,
                   figure_errors: dict[str, str] | None = None, evaluation: dict[str, Any] | None = None,
                   provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything ``summary.json`` holds: verdict, headline numbers, per-ROI statistics, settings."""
    stats = comparison.stats
    return {
        "title": comparison.config.title,
        "verdict": verdict(stats),
        "headline": headline(stats),
        "statistics": stats.to_dict(),
        "completions": {
            "base": {"used": comparison.base.n, "failed": len(comparison.base.failures),
                     "failures": comparison.base.failures[:20]},
            "tuned": {"used": comparison.tuned.n, "failed": len(comparison.tuned.failures),
                      "failures": comparison.tuned.failures[:20]},
        },
        "prompts": comparison.prompts,
        "roi_names": comparison.roi_names,
        "settings": settings or {},
        "evaluation": evaluation,
        "run": None if run_card is None else {k: run_card.get(k) for k in ("name", "trainer", "created", "status",
                                                                               "recipe_path") if k in run_card},
        "figures": figures or {},
        "figure_errors": figure_errors or {},
        "provenance": provenance or {},
    }
