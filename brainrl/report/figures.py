"""The report's figures as PNG files: surfaces (via brainrl.cortex.plot), ROI differences, time courses,
length dependence and training curves.

Matplotlib is used through ``Figure`` + the Agg canvas (no pyplot state, nothing left open), so figures
can be drawn from any thread or a headless machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.report.data import Comparison

log = logging.getLogger(__name__)

BASE_COLOR = "#4c72b0"
TUNED_COLOR = "#dd8452"
TARGET_COLOR = "#c44e52"
OTHER_COLOR = "#8c8c8c"
#: surface colour limits ignore the most extreme 0.5% of vertices, so a few outliers do not wash out the map
SURFACE_PERCENTILE = 99.5


@dataclass
class Figures:
    """Written figure paths by name, and the reason for every figure that could not be drawn."""

    paths: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` on its own Agg canvas: no pyplot state, safe from any thread, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path, dpi: int = 100) -> Path:
    """Write ``figure`` as ``path`` (folders created) and release its artists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    figure.clear()
    return path


# surfaces ------------------------------------------------------------------------------------------------
def vertex_effect_size(base_maps: np.ndarray, tuned_maps: np.ndarray) -> np.ndarray:
    """Per-vertex Hedges' g of the frame-averaged maps (0 where both models are constant)."""
    n_b, n_t = base_maps.shape[0], tuned_maps.shape[0]
    diff = tuned_maps.mean(axis=0, dtype=np.float64) - base_maps.mean(axis=0, dtype=np.float64)
    pooled = ((n_b - 1) * base_maps.var(axis=0, ddof=1, dtype=np.float64)
              + (n_t - 1) * tuned_maps.var(axis=0, ddof=1, dtype=np.float64)) / (n_b + n_t - 2)
    j = 1.0 - 3.0 / (4.0 * (n_b + n_t) - 9.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(pooled > 0, j * diff / np.sqrt(pooled), 0.0)
    return g


SURFACE_NAMES = ("surface_base", "surface_tuned", "surface_diff", "surface_effect")


def surface_figures(comparison: Comparison, folder: Path, dpi: int = 90,
                    names: Sequence[str] = SURFACE_NAMES) -> Figures:
    """Base mean, tuned mean (shared colour limits), tuned − base (diverging, symmetric) and the per-vertex
    effect size, each in four views on the inflated fsaverage5 mesh."""
    from brainrl.cortex.plot import plot_surface

    out = Figures()
    base = comparison.base.mean_maps.mean(axis=0, dtype=np.float64)
    tuned = comparison.tuned.mean_maps.mean(axis=0, dtype=np.float64)
    diff = tuned - base
    both = np.concatenate([base, tuned])
    low, high = np.percentile(both, [100 - SURFACE_PERCENTILE, SURFACE_PERCENTILE])
    shared: dict[str, Any] = {"vmin": float(low), "vmax": float(high)}
    if low < 0 < high:  # signed activity: centre on zero so sign reads the same in both maps
        bound = float(max(-low, high))
        shared = {"vmin": -bound, "vmax": bound, "symmetric": True}
    diff_bound = float(np.percentile(np.abs(diff), SURFACE_PERCENTILE)) or float(np.abs(diff).max()) or 1.0
    effect = vertex_effect_size(comparison.base.mean_maps, comparison.tuned.mean_maps)
    effect_bound = float(np.percentile(np.abs(effect), SURFACE_PERCENTILE)) or 1.0
    jobs = {
        "surface_base": (base, f"base: mean over {comparison.base.n} completions", shared),
        "surface_tuned": (tuned, f"tuned: mean over {comparison.tuned.n} completions", shared),
        "surface_diff": (diff, "tuned − base", {"vmin": -diff_bound, "vmax": diff_bound, "symmetric": True,
                                                "label": "Δ predicted response, tuned − base (a.u.)"}),
        "surface_effect": (effect, "tuned − base, Hedges' g per vertex",
                           {"vmin": -effect_bound, "vmax": effect_bound, "symmetric": True,
                            "label": "Hedges' g (unitless)"}),
    }
    captions = {
        "surface_base": "Predicted activity of the base model, averaged over frames and completions. Base and "
                        f"tuned share colour limits (the {SURFACE_PERCENTILE:g}th percentile of both).",
        "surface_tuned": "The same for the tuned model, on the same colour scale.",
        "surface_diff": "Tuned − base (red: higher after tuning). Diverging colours, limits ±the "
                        f"{SURFACE_PERCENTILE:g}th percentile of |Δ|.",
        "surface_effect": "Per-vertex Hedges' g (difference / pooled SD across completions): where the change is "
                          "large relative to completion-to-completion variation. Not corrected for multiple "
                          "comparisons; read the ROI table for tests.",
    }
    unknown = set(names) - set(jobs)
    if unknown:
        raise ValueError(f"Unknown surface figure(s) {sorted(unknown)}; choose from {list(jobs)}.")
    for name in names:
        values, title, limits = jobs[name]
        try:
            out.paths[name] = plot_surface(values, folder / f"{name}.png", title=title, dpi=dpi, **limits)
            out.captions[name] = captions[name]
        except Exception as err:  # one failed render must not lose the others; the report says why
            log.warning("surface figure %s failed: %s", name, err)
            out.errors[name] = f"{type(err).__name__}: {err}"
    return out


# ROI differences ---------------------------------------------------------------------------------------------
def roi_difference_chart(comparison: Comparison, path: Path) -> Path:
    """Horizontal bars of tuned − base per ROI with 95% CIs, sorted by difference; the target in red,
    whole-cortex rows hatched, FDR-significant ROIs marked with *."""
    stats = comparison.stats
    rows = sorted(stats.rows, key=lambda r: r.diff.estimate)
    whole = {"global", "left_hemisphere", "right_hemisphere"}
    figure = new_figure(7.5, max(3.0, 0.24 * len(rows) + 1.2))
    ax = figure.add_subplot()
    y = np.arange(len(rows))
    est = np.array([r.diff.estimate for r in rows])
    low = np.array([r.diff.low for r in rows])
    high = np.array([r.diff.high for r in rows])
    colors = [TARGET_COLOR if r.name == stats.target else OTHER_COLOR for r in rows]
    bars = ax.barh(y, est, color=colors, alpha=0.85)
    for bar, r in zip(bars, rows):
        if r.name in whole:
            bar.set_hatch("///")
            bar.set_facecolor("#bdbdbd")
    ax.errorbar(est, y, xerr=[est - low, high - est], fmt="none", ecolor="black", elinewidth=1, capsize=2)
    alpha = stats.config.fdr_alpha
    labels = [f"{r.name}{' *' if r.q_value is not None and r.q_value < alpha else ''}" for r in rows]
    ax.set_yticks(y, labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    if "global" in {r.name for r in rows}:
        g = stats.row("global").diff.estimate
        ax.axvline(g, color="#555555", linestyle="--", linewidth=1, label=f"global Δ = {g:+.3g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(f"tuned − base (ROI mean), {int(stats.config.level * 100)}% bootstrap CI")
    ax.set_title(f"ROI differences (n = {stats.n_base} base, {stats.n_tuned} tuned; * q < {alpha:g})", fontsize=10)
    return save_figure(figure, path)


# time courses -------------------------------------------------------------------------------------------------
def padded(courses: Sequence[np.ndarray], column: int) -> np.ndarray:
    """(N, T_max) time courses of one ROI aligned at t = 0, NaN after each completion ends."""
    t_max = max(c.shape[0] for c in courses)
    out = np.full((len(courses), t_max), np.nan)
    for i, c in enumerate(courses):
        out[i, : c.shape[0]] = c[:, column]
    return out


def mean_and_ci(matrix: np.ndarray, level: float = 0.95, min_n: int = 5) -> tuple[np.ndarray, ...]:
    """Per time point: mean, t-based CI and n over the completions still running; NaN where n < min_n."""
    import warnings

    from scipy import stats

    n = np.sum(~np.isnan(matrix), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tails; masked by min_n below
        mean = np.nanmean(np.where(n >= 1, matrix, np.nan), axis=0) if matrix.size else np.array([])
        sd = np.nanstd(matrix, axis=0, ddof=1)
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(np.maximum(n, 1))
    valid = n >= min_n
    mean = np.where(valid, mean, np.nan)
    return mean, np.where(valid, mean - half, np.nan), np.where(valid, mean + half, np.nan), n


def timecourse_rois(comparison: Comparison, count: int = 3) -> list[str]:
    """The target, then the configured ROIs or the ``count`` others with the largest |Δ|, then global."""
    stats = comparison.stats
    chosen = [stats.target] if stats.target else []
    if comparison.config.timecourse_rois:
        chosen += [n for n in comparison.config.timecourse_rois if n in comparison.roi_names and n not in chosen]
    else:  # the largest |Δ| among regions that share no vertex with the target (variants of it add nothing)
        from brainrl.cortex.rois import get_roi

        def overlaps_target(name: str) -> bool:
            try:
                return bool((get_roi(name).mask() & get_roi(stats.target).mask()).any())
            except (KeyError, ValueError, FileNotFoundError):  # an unregistered custom ROI: keep it
                return False

        others = [r for r in stats.rows if r.name not in chosen and r.name not in
                  ("global", "left_hemisphere", "right_hemisphere") and not (stats.target and overlaps_target(r.name))]
        chosen += [r.name for r in sorted(others, key=lambda r: -abs(r.diff.estimate))[:count]]
    if "global" in comparison.roi_names and "global" not in chosen:
        chosen.append("global")
    return chosen


def timecourse_figure(comparison: Comparison, path: Path) -> Path:
    names = timecourse_rois(comparison)
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    figure = new_figure(4.0 * cols, 2.8 * rows)
    axes = figure.subplots(rows, cols, squeeze=False)
    level, min_n = comparison.stats.config.level, comparison.config.min_timecourse_n
    for ax, name in zip(axes.flat, names):
        column = comparison.roi_names.index(name)
        for model, color in ((comparison.base, BASE_COLOR), (comparison.tuned, TUNED_COLOR)):
            mean, low, high, n = mean_and_ci(padded(model.timecourses, column), level, min_n)
            t = np.arange(mean.size)
            ax.plot(t, mean, color=color, label=f"{model.label} (n={model.n})")
            ax.fill_between(t, low, high, color=color, alpha=0.25, linewidth=0)
        ax.set_title(name + (" (target)" if name == comparison.stats.target else ""), fontsize=10)
        ax.set_xlabel("frame (TR) from completion start")
        ax.axhline(0, color="black", linewidth=0.5)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel("ROI mean")
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(f"ROI time courses: mean ± {int(level * 100)}% CI across completions (drawn while ≥ {min_n} "
                    "completions per model are still running)", fontsize=10)
    return save_figure(figure, path)


# length -----------------------------------------------------------------------------------------------------------
def length_figure(comparison: Comparison, path: Path) -> Path:
    """Target (and global) ROI value against completion length, per model: is a difference a length effect?"""
    names = [n for n in (comparison.stats.target, "global") if n and n in comparison.roi_names]
    figure = new_figure(4.2 * len(names), 3.2)
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        column = comparison.roi_names.index(name)
        for model, color in ((comparison.base, BASE_COLOR), (comparison.tuned, TUNED_COLOR)):
            x, y = model.n_words, model.roi_values[:, column]
            ax.scatter(x, y, s=12, color=color, alpha=0.7, label=model.label)
            if np.ptp(x) > 0 and x.size > 2:
                slope, intercept = np.polyfit(x, y, 1)
                xs = np.linspace(x.min(), x.max(), 10)
                ax.plot(xs, intercept + slope * xs, color=color, linewidth=1)
        ax.set_xlabel("completion length (words)")
        ax.set_ylabel(f"{name} mean")
        ax.set_title(name, fontsize=10)
    axes[0].legend(fontsize=8)
    return save_figure(figure, path)


# training ---------------------------------------------------------------------------------------------------------
TRAINING_PANELS = (
    ("reward", ("reward_mean", "reward", "train/reward"), ("reward_std", "reward_std")),
    ("KL to base", ("kl_per_token", "kl", "objective/kl", "train/kl"), ()),
    ("loss", ("loss", "train/loss"), ()),
)


def _series(rows: list[dict[str, Any]], keys: Sequence[str]) -> tuple[str, np.ndarray, np.ndarray] | None:
    for key in keys:
        pairs = [(r.get("step", i + 1), r[key]) for i, r in enumerate(rows)
                 if isinstance(r.get(key), (int, float)) and r.get(key) is not None]
        pairs = [(s, v) for s, v in pairs if np.isfinite(v)]
        if pairs:
            steps, values = zip(*pairs)
            return key, np.asarray(steps, float), np.asarray(values, float)
    return None


def training_figure(metrics: list[dict[str, Any]], path: Path) -> Path | None:
    """Reward (± within-step SD), KL and loss per step from ``metrics.jsonl``; None if none is logged."""
    panels = []
    for title, keys, std_keys in TRAINING_PANELS:
        series = _series(metrics, keys)
        if series is not None:
            panels.append((title, series, _series(metrics, std_keys) if std_keys else None))
    if not panels:
        return None
    figure = new_figure(4.0 * len(panels), 3.0)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (key, steps, values), spread) in zip(axes, panels):
        ax.plot(steps, values, color=TUNED_COLOR, marker="." if len(steps) < 50 else None)
        if spread is not None and spread[1].shape == steps.shape:
            ax.fill_between(steps, values - spread[2], values + spread[2], color=TUNED_COLOR, alpha=0.2, linewidth=0)
        ax.set_title(f"{title} ({key})", fontsize=10)
        ax.set_xlabel("step")
    return save_figure(figure, path)


def make_figures(comparison: Comparison, folder: Path, *, metrics: list[dict[str, Any]] | None = None,
                 surfaces: bool = True) -> Figures:
    """Every figure of the report; a figure that fails is recorded in ``errors`` and the rest are drawn."""
    folder = Path(folder)
    out = surface_figures(comparison, folder) if surfaces else Figures()
    jobs = {
        "roi_differences": (roi_difference_chart, "Tuned − base per ROI with bootstrap CIs, sorted. The target is "
                            "red, whole-cortex rows are hatched, the dashed line is the global shift: an ROI only "
                            "stands out if its bar clears that line, not just zero."),
        "timecourses": (timecourse_figure, "ROI time courses aligned at the start of each completion."),
        "length": (length_figure, "ROI value against completion length, per completion, with a least-squares line "
                   "per model. Parallel lines offset vertically mean a model effect; points that only slide "
                   "along a common line mean a length effect."),
    }
    for name, (function, caption) in jobs.items():
        try:
            out.paths[name] = function(comparison, folder / f"{name}.png")
            out.captions[name] = caption
        except Exception as err:
            log.warning("figure %s failed: %s", name, err)
            out.errors[name] = f"{type(err).__name__}: {err}"
    if metrics:
        try:
            path = training_figure(metrics, folder / "training.png")
            if path is not None:
                out.paths["training"] = path
                out.captions["training"] = "Training curves from the run's metrics.jsonl."
            else:
                out.errors["training"] = "metrics.jsonl has no reward, KL or loss column"
        except Exception as err:
            out.errors["training"] = f"{type(err).__name__}: {err}"
    return out
