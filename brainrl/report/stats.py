"""Base-vs-tuned statistics over per-completion ROI values: CIs, effect sizes, tests, FDR, length check.

Each model contributes N completions; each completion has one value per ROI (its mean over vertices and
frames), a length (words) and a stratum (the index of the prompt it answers). Both models answer the
same prompts. The prompt is the unit of uncertainty (completions of one prompt are not independent):
means and tuned − base differences get the cluster-robust t interval of ``cluster_interval``, paired by
prompt, which keeps its coverage with few prompts; Hedges' g and the length-adjusted effect get the
expanded percentile bootstrap over whole prompts (one draw for both models). With a single prompt (or
``resample="completions"``) completions are resampled within each prompt and model instead, and the CIs
are conditional on these prompts (the report says which). The permutation test swaps model labels
within each prompt.

Everything random comes from one ``numpy.random.Generator`` seeded by ``StatsConfig.seed``; the same
inputs and seed give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

TESTS = ("permutation", "welch")
RESAMPLING = ("auto", "prompts", "completions")


@dataclass(frozen=True)
class StatsConfig:
    """How uncertainty is estimated. Defaults give CI endpoints stable to about ±0.05 SE."""

    n_boot: int = 2000
    n_perm: int = 5000
    level: float = 0.95
    test: str = "permutation"  # or "welch" (ignores prompt strata)
    #: what the bootstrap resamples: "prompts" (whole prompts, paired across models: the CI covers prompt
    #: variation), "completions" (within each prompt: CI conditional on these prompts), or "auto"
    #: (prompts when there are at least ``min_prompts_for_cluster`` prompts)
    resample: str = "auto"
    min_prompts_for_cluster: int = 2
    fdr_alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.test not in TESTS:
            raise ValueError(f"Unknown test {self.test!r}; choose one of {', '.join(TESTS)}.")
        if not 0.5 < self.level < 1:
            raise ValueError(f"level must be in (0.5, 1), e.g. 0.95; got {self.level}.")
        if self.n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a usable percentile CI; got {self.n_boot}.")
        if self.test == "permutation" and self.n_perm < 100:
            raise ValueError(f"n_perm must be >= 100; got {self.n_perm}.")
        if self.resample not in RESAMPLING:
            raise ValueError(f"Unknown resample {self.resample!r}; choose one of {', '.join(RESAMPLING)}.")
        if not 0 < self.fdr_alpha < 1:
            raise ValueError(f"fdr_alpha must be in (0, 1); got {self.fdr_alpha}.")


@dataclass
class ModelSample:
    """One model's completions: ``values`` (N, K) per ROI, ``lengths`` (N,) in words, ``strata`` (N,)
    prompt index of each completion (all zeros when unknown)."""

    values: np.ndarray
    lengths: np.ndarray | None = None
    strata: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2:
            raise ValueError(f"values must be (completions, ROIs); got shape {self.values.shape}.")
        n = self.values.shape[0]
        if not np.isfinite(self.values).all():
            raise ValueError("values contain NaN/inf; drop failed completions before comparing.")
        self.strata = np.zeros(n, dtype=np.int64) if self.strata is None else np.asarray(self.strata).astype(np.int64)
        if self.strata.shape != (n,):
            raise ValueError(f"strata must have one entry per completion ({n}); got shape {self.strata.shape}.")
        if self.lengths is not None:
            self.lengths = np.asarray(self.lengths, dtype=np.float64)
            if self.lengths.shape != (n,):
                raise ValueError(f"lengths must have one entry per completion ({n}); got {self.lengths.shape}.")

    @property
    def n(self) -> int:
        return int(self.values.shape[0])


@dataclass
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def covers(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)


@dataclass
class ROIComparison:
    """Everything reported for one ROI (or contrast)."""

    name: str
    base: Interval
    tuned: Interval
    diff: Interval  # tuned - base
    cohens_d: float
    hedges_g: Interval
    p_value: float
    q_value: float | None  # BH-adjusted within the ROI family; None for planned contrasts
    length_adjusted: Interval | None  # model coefficient with length (and prompt) in the regression
    in_family: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("base", "tuned", "diff", "hedges_g", "length_adjusted"):
            value = getattr(self, key)
            out[key] = None if value is None else {"estimate": value.estimate, "ci": [value.low, value.high]}
        return _clean(out)


@dataclass
class LengthSummary:
    base_mean_words: float
    tuned_mean_words: float
    diff: Interval  # tuned - base mean words
    note: str = ""


@dataclass
class ComparisonStats:
    """The statistics the report shows, with the settings that produced them."""

    rows: list[ROIComparison]
    target: str | None
    selectivity: ROIComparison | None  # target - global, per completion
    length: LengthSummary | None
    n_base: int
    n_tuned: int
    n_strata: int
    config: StatsConfig
    method: dict[str, str] = field(default_factory=dict)

    def row(self, name: str) -> ROIComparison:
        for r in self.rows:
            if r.name == name:
                return r
        if self.selectivity is not None and self.selectivity.name == name:
            return self.selectivity
        raise KeyError(f"No ROI {name!r} in this comparison; have {[r.name for r in self.rows]}.")

    def family(self) -> list[ROIComparison]:
        return [r for r in self.rows if r.in_family]

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "n_base": self.n_base,
            "n_tuned": self.n_tuned,
            "n_prompts": self.n_strata,
            "target": self.target,
            "rois": [r.to_dict() for r in self.rows],
            "selectivity": None if self.selectivity is None else self.selectivity.to_dict(),
            "length": None if self.length is None else {
                "base_mean_words": self.length.base_mean_words,
                "tuned_mean_words": self.length.tuned_mean_words,
                "diff": {"estimate": self.length.diff.estimate, "ci": [self.length.diff.low, self.length.diff.high]},
                "note": self.length.note,
            },
            "config": asdict(self.config),
            "method": self.method,
        })


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# resampling --------------------------------------------------------------------------------------------
def stratified_bootstrap_weights(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) resampling counts divided by N: row b times the values gives replicate b's mean.

    Completions are drawn with replacement within each stratum, so every replicate keeps each prompt's
    share of the sample (the estimate stays conditional on the prompts)."""
    n = strata.shape[0]
    counts = np.zeros((n_boot, n), dtype=np.float64)
    rows = np.arange(n_boot)[:, None]
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        draws = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        np.add.at(counts, (np.broadcast_to(rows, draws.shape), draws), 1.0)
    return counts / n


def prompt_draws(n_prompts: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The one prompt bootstrap draw: (n_boot, P) counts, how often each of P prompts is drawn (with
    replacement, P draws) in each replicate."""
    return rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=n_boot).astype(np.float64)


def prompt_bootstrap_rows(prompt_index: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each replicate of the prompt bootstrap (``prompt_draws``): every row of a drawn prompt,
    repeated as often as the prompt was drawn. For statistics that are not means (correlations, RMSE,
    calibration), which the weights of ``prompt_bootstrap_weights`` cannot express."""
    prompt_index = np.asarray(prompt_index)
    levels, inverse = np.unique(prompt_index, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == k) for k in range(levels.size)]
    counts = prompt_draws(levels.size, n_boot, rng).astype(np.int64)
    return [np.concatenate([np.tile(rows_of[k], c) for k, c in enumerate(row) if c]) for row in counts]


def prompt_bootstrap_weights(base_strata: np.ndarray, tuned_strata: np.ndarray, n_boot: int,
                             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired cluster bootstrap: draw prompts with replacement (one draw for both models); each completion
    weighs as often as its prompt was drawn. Returns per-model weights (rows sum to 1) and the joint
    (base then tuned) counts."""
    levels = np.unique(np.concatenate([base_strata, tuned_strata]))
    counts = prompt_draws(levels.size, n_boot, rng)
    out = []
    for strata in (base_strata, tuned_strata):
        w = counts[:, np.searchsorted(levels, strata)]
        out.append(w / w.sum(axis=1, keepdims=True))
    return out[0], out[1], counts[:, np.searchsorted(levels, np.concatenate([base_strata, tuned_strata]))]


def expanded_tail(level: float, units: int | None, groups: int = 1) -> float:
    """Lower tail probability of Hesterberg's expanded percentile interval: the plain percentile bootstrap
    is too narrow with few resampling units (it covered ~88% instead of 95% with 8 prompts), so the
    quantile level is widened to match sqrt(m/(m-g)) · t_{m-g} instead of z, for m units resampled
    within g strata (m-g degrees of freedom)."""
    alpha = (1 - level) / 2
    if units is None or units - groups < 1:
        return alpha
    from scipy import stats

    df = units - groups
    z = math.sqrt(units / df) * stats.t.ppf(1 - alpha, df)
    return float(stats.norm.sf(z))


def cluster_interval(values: np.ndarray, clusters: np.ndarray, *, paired: np.ndarray | None = None,
                     paired_clusters: np.ndarray | None = None, level: float = 0.95) -> Interval:
    """Mean of ``values`` (minus the mean of ``paired``, when given) with a cluster-robust t interval.

    Completions of one prompt are not independent, so the prompt is the unit: each prompt's summed
    deviation from the mean (its influence on the estimate) is one observation, the variance is their sum
    of squares times P/(P − 1), and the interval uses Student's t with P − 1 degrees of freedom for P
    prompts. With equal completions per prompt this is exactly the t interval of the prompt means; base
    and tuned stay paired because both models' deviations of one prompt are summed. NaN values (failed
    items) are left out. Unlike a percentile bootstrap, whose interval cannot reach beyond the range of the
    prompt means, it keeps its nominal coverage with a handful of prompts (tests/report: simulated
    coverage). Fewer than two prompts give NaN bounds.
    """
    from scipy import stats

    def deviations(v: np.ndarray, c: np.ndarray) -> tuple[float, dict[Any, float]]:
        v, c = np.asarray(v, np.float64), np.asarray(c)
        keep = np.isfinite(v)
        v, c = v[keep], c[keep]
        if v.size == 0:
            return math.nan, {}
        mean = float(v.mean())
        levels, inverse = np.unique(c, return_inverse=True)
        sums = np.bincount(inverse, weights=v - mean, minlength=levels.size) / v.size
        return mean, dict(zip(levels.tolist(), sums.tolist()))

    estimate, influence = deviations(values, clusters)
    if paired is not None:
        other, other_influence = deviations(paired, clusters if paired_clusters is None else paired_clusters)
        estimate -= other
        for key, value in other_influence.items():
            influence[key] = influence.get(key, 0.0) - value
    p = len(influence)
    if p < 2 or not math.isfinite(estimate):
        return Interval(float(estimate), math.nan, math.nan)
    se = math.sqrt(p / (p - 1) * float(np.sum(np.square(list(influence.values())))))
    half = float(stats.t.ppf(0.5 + level / 2, p - 1)) * se
    return Interval(float(estimate), estimate - half, estimate + half)


_SCALES: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "identity": (lambda v: v, lambda v: v),
    "fisher": (math.atanh, math.tanh),  # a correlation
    "log": (math.log, math.exp),  # a positive statistic (an RMSE)
}


def jackknife_interval(statistic: Callable[[np.ndarray], float], clusters: np.ndarray, *, scale: str = "identity",
                       level: float = 0.95) -> Interval:
    """A statistic of the items (``statistic(rows)`` → float, rows an index array) with the delete-one-cluster
    jackknife interval: leave each prompt out in turn, SE² = (P − 1)/P · Σ (θ̂₋ₚ − mean)², Student t with
    P − 1 degrees of freedom, on ``scale`` ("fisher" for a correlation, "log" for an RMSE) and mapped back.
    For a mean with equal completions per prompt it is the cluster t interval of ``cluster_interval``; it
    extends that interval to statistics that are not means (r, RMSE and their tuned − base differences).
    Simulated coverage at nominal 95% (scripts/validate_interval_coverage.py; docs/theta.md) of r, RMSE and
    their differences: 93.4–96.0% with 16–64 prompts, 91.4–96.6% with 8 (the plain percentile prompt
    bootstrap: 83–94%). Fewer than 3 prompts, or a statistic undefined without some prompt, give NaN bounds."""
    from scipy import stats

    clusters = np.asarray(clusters)
    forward, back = _SCALES[scale]
    levels = np.unique(clusters)
    rows = np.arange(clusters.size)
    nan = math.nan
    try:
        estimate = float(statistic(rows))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return Interval(nan, nan, nan)
    if levels.size < 3 or not math.isfinite(estimate):
        return Interval(estimate, nan, nan)
    try:
        with np.errstate(all="ignore"):
            centre = forward(estimate)
            leave_out = np.array([forward(float(statistic(rows[clusters != c]))) for c in levels])
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return Interval(estimate, nan, nan)
    if not np.all(np.isfinite(leave_out)):
        return Interval(estimate, nan, nan)
    p = levels.size
    se = math.sqrt((p - 1) / p * float(np.sum((leave_out - leave_out.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + level / 2, p - 1)) * se
    return Interval(estimate, back(centre - half), back(centre + half))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN with fewer than 3 items or a constant side."""
    if x.size < 3 or x.min() == x.max() or y.min() == y.max():
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    sxx, syy = float(xc @ xc), float(yc @ yc)
    if sxx <= 0 or syy <= 0:
        return math.nan
    return float(xc @ yc) / math.sqrt(sxx * syy)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman ρ over the pairs where both sides are finite; NaN with fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan
    return float(spearmanr(x[ok], y[ok]).statistic)


def pearson_interval(x: np.ndarray, y: np.ndarray, clusters: np.ndarray, *, paired: np.ndarray | None = None,
                     level: float = 0.95) -> Interval:
    """Pearson r of (x, y), or with ``paired`` the difference r(x, y) − r(x, paired) on the same items, with
    the prompt jackknife interval (``jackknife_interval``; a single r on Fisher's z scale). Items with a NaN
    anywhere are left out; fewer than 3 items or a constant side give NaN."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    other = np.zeros_like(x) if paired is None else np.asarray(paired, np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(other)
    x, y, other, clusters = x[keep], y[keep], other[keep], np.asarray(clusters)[keep]
    if paired is None:
        r = pearson(x, y)
        if math.isfinite(r) and abs(r) >= 1:
            return Interval(r, r, r)
        return jackknife_interval(lambda rows: pearson(x[rows], y[rows]), clusters, scale="fisher", level=level)
    return jackknife_interval(lambda rows: pearson(x[rows], y[rows]) - pearson(x[rows], other[rows]), clusters,
                              level=level)


def rmse_interval(errors: np.ndarray, clusters: np.ndarray, *, paired: np.ndarray | None = None,
                  level: float = 0.95) -> Interval:
    """Root mean square of ``errors``, or with ``paired`` (the other model's errors on the same items) the
    difference RMSE(errors) − RMSE(paired), with the prompt jackknife interval (``jackknife_interval``; a
    single RMSE on the log scale). NaN items are left out."""
    sq = np.square(np.asarray(errors, np.float64))
    other = np.zeros_like(sq) if paired is None else np.square(np.asarray(paired, np.float64))
    keep = np.isfinite(sq) & np.isfinite(other)
    sq, other, clusters = sq[keep], other[keep], np.asarray(clusters)[keep]
    if sq.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    if paired is None:
        if not np.any(sq > 0):
            return Interval(0.0, 0.0, 0.0)
        return jackknife_interval(lambda rows: math.sqrt(sq[rows].mean()), clusters, scale="log", level=level)
    return jackknife_interval(lambda rows: math.sqrt(sq[rows].mean()) - math.sqrt(other[rows].mean()), clusters,
                              level=level)


def percentile_interval(replicates: np.ndarray, level: float, units: int | None = None,
                        groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of bootstrap ``replicates`` (along axis 0): the expanded percentile interval with ``units``
    resampled units in ``groups`` strata (``expanded_tail``), the plain percentile one when ``units`` is None."""
    alpha = expanded_tail(level, units, groups)
    with np.errstate(invalid="ignore"):
        low = np.nanquantile(replicates, alpha, axis=0)
        high = np.nanquantile(replicates, 1 - alpha, axis=0)
    return low, high


def permutation_pvalues(base: np.ndarray, tuned: np.ndarray, base_strata: np.ndarray, tuned_strata: np.ndarray,
                        n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided p-values (K,) for the difference of means, swapping model labels within each stratum.

    The same permutations serve every ROI. p = (1 + #{|perm diff| >= |observed|}) / (1 + n_perm), so it
    is never 0."""
    pooled = np.concatenate([base, tuned])
    strata = np.concatenate([base_strata, tuned_strata])
    is_tuned = np.concatenate([np.zeros(len(base), bool), np.ones(len(tuned), bool)])
    labels = np.zeros((n_perm, pooled.shape[0]), dtype=bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        stratum_labels = np.broadcast_to(is_tuned[members], (n_perm, members.size))
        labels[:, members] = rng.permuted(stratum_labels, axis=1)
    n_t, n_b = len(tuned), len(base)
    tuned_means = labels.astype(np.float64) @ pooled / n_t
    base_means = (~labels).astype(np.float64) @ pooled / n_b
    perm = tuned_means - base_means
    observed = tuned.mean(axis=0) - base.mean(axis=0)
    tolerance = 1e-12 * np.maximum(1.0, np.abs(observed))
    exceed = (np.abs(perm) >= np.abs(observed) - tolerance).sum(axis=0)
    return (1.0 + exceed) / (1.0 + n_perm)


def welch_pvalues(base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
    from scipy import stats

    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_ind(tuned, base, axis=0, equal_var=False)
    return np.asarray(result.pvalue, dtype=np.float64)


def bh_qvalues(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), through scipy."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p
    return np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64)


# effect sizes ------------------------------------------------------------------------------------------
def hedges_correction(n_base: int, n_tuned: int) -> float:
    """Small-sample bias correction J for Cohen's d (Hedges 1981 approximation)."""
    return 1.0 - 3.0 / (4.0 * (n_base + n_tuned) - 9.0)


def cohens_d(base: np.ndarray, tuned: np.ndarray) -> np.ndarray:
    """(mean_t - mean_b) / pooled SD, per column; NaN where both samples are constant."""
    n_b, n_t = base.shape[0], tuned.shape[0]
    pooled = ((n_b - 1) * base.var(axis=0, ddof=1) + (n_t - 1) * tuned.var(axis=0, ddof=1)) / (n_b + n_t - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = (tuned.mean(axis=0) - base.mean(axis=0)) / np.sqrt(pooled)
    return np.where(pooled > 0, d, np.nan)


def _boot_moments(weights: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicate means and unbiased variances from resampling weights."""
    mean = weights @ values
    second = weights @ (values**2)
    var = np.maximum(second - mean**2, 0.0) * n / max(n - 1, 1)
    return mean, var


# length check -------------------------------------------------------------------------------------------
def _design(lengths: np.ndarray, is_tuned: np.ndarray, strata: np.ndarray) -> np.ndarray:
    """Columns: model indicator, centred length, then one intercept per prompt (fixed effects)."""
    levels = np.unique(strata)
    columns = [is_tuned.astype(np.float64), lengths - lengths.mean()]
    columns += [(strata == s).astype(np.float64) for s in levels]
    return np.stack(columns, axis=1)


def length_adjusted_effects(base: ModelSample, tuned: ModelSample, counts: np.ndarray | None,
                            level: float, units: int | None = None,
                            groups: int = 1) -> tuple[list[Interval] | None, str]:
    """The model coefficient of ``value ~ model + length + prompt`` per ROI, with a bootstrap CI.

    If tuned completions are longer and length alone drives the ROI, the raw difference is non-zero
    but this coefficient is not. ``counts`` (n_boot, N_base + N_tuned) are the bootstrap's resampling counts
    (any positive scale per row), so the CI comes from the same replicates as the other intervals."""
    if base.lengths is None or tuned.lengths is None:
        return None, "no completion lengths were given"
    lengths = np.concatenate([base.lengths, tuned.lengths])
    if np.ptp(lengths) == 0:
        return None, "every completion has the same length, so length cannot explain a difference"
    is_tuned = np.concatenate([np.zeros(base.n), np.ones(tuned.n)])
    strata = np.concatenate([base.strata, tuned.strata])
    x = _design(lengths, is_tuned, strata)
    y = np.concatenate([base.values, tuned.values])
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return None, ("length is fully determined by model and prompt (collinear), so their effects cannot be "
                      "separated")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    estimate = coef[0]
    if counts is None:
        return [Interval(float(e), float("nan"), float("nan")) for e in estimate], ""
    w = counts
    xtwx = np.einsum("bn,np,nq->bpq", w, x, x)
    xtwy = np.einsum("bn,np,nk->bpk", w, x, y)
    # a replicate can drop every completion of one kind within the data; a tiny ridge keeps it solvable
    ridge = 1e-9 * np.trace(x.T @ x) / x.shape[1]
    xtwx = xtwx + ridge * np.eye(x.shape[1])[None]
    replicates = np.linalg.solve(xtwx, xtwy)[:, 0, :]
    low, high = percentile_interval(replicates, level, units, groups)
    return [Interval(float(e), float(lo), float(hi)) for e, lo, hi in zip(estimate, low, high)], ""


# the comparison ------------------------------------------------------------------------------------------
def compare_samples(base: ModelSample, tuned: ModelSample, names: Sequence[str], *, target: str | None = None,
                    global_name: str = "global", family: Sequence[str] | None = None,
                    config: StatsConfig | None = None) -> ComparisonStats:
    """Per-ROI means with CIs, tuned − base differences with CIs, Cohen's d / Hedges' g, a test per ROI
    with BH-FDR over ``family`` (default: every ROI), the target's selectivity (target − ``global_name``)
    and a length-adjusted model effect.

    ``names`` label the K columns of ``values``. Bootstrap and permutation share one seeded generator.
    """
    config = config or StatsConfig()
    names = list(names)
    k = len(names)
    if len(set(names)) != k:
        raise ValueError(f"ROI names must be unique; got {names}.")
    for label, sample in (("base", base), ("tuned", tuned)):
        if sample.values.shape[1] != k:
            raise ValueError(f"{label} values have {sample.values.shape[1]} columns but {k} ROI names were given.")
        if sample.n < 2:
            raise ValueError(f"{label} has {sample.n} usable completion(s); a comparison needs at least 2 per model "
                             "(32 or more for useful confidence intervals).")
    if target is not None and target not in names:
        raise ValueError(f"Target ROI {target!r} is not among the compared ROIs {names}.")
    shared = set(np.unique(base.strata)) & set(np.unique(tuned.strata))
    if set(np.unique(base.strata)) != set(np.unique(tuned.strata)):
        raise ValueError("base and tuned must answer the same prompts (strata differ: "
                         f"base {sorted(set(base.strata.tolist()))}, tuned {sorted(set(tuned.strata.tolist()))}).")
    for s in shared:
        if (base.strata == s).sum() < 1 or (tuned.strata == s).sum() < 1:
            raise ValueError(f"prompt {s} has no completion for one of the models.")

    # planned contrast: selectivity = target - global, per completion
    columns = list(names)
    base_values, tuned_values = base.values, tuned.values
    selectivity_name = None
    if target is not None and global_name in names and target != global_name:
        selectivity_name = f"{target} − {global_name}"
        t_i, g_i = names.index(target), names.index(global_name)
        base_values = np.column_stack([base_values, base_values[:, t_i] - base_values[:, g_i]])
        tuned_values = np.column_stack([tuned_values, tuned_values[:, t_i] - tuned_values[:, g_i]])
        columns.append(selectivity_name)
    b = ModelSample(base_values, base.lengths, base.strata)
    t = ModelSample(tuned_values, tuned.lengths, tuned.strata)

    rng = np.random.default_rng(config.seed)
    resample = config.resample
    if resample == "auto":
        resample = "prompts" if len(shared) >= config.min_prompts_for_cluster else "completions"
    if resample == "prompts":
        w_base, w_tuned, joint_counts = prompt_bootstrap_weights(b.strata, t.strata, config.n_boot, rng)
    else:
        w_base = stratified_bootstrap_weights(b.strata, config.n_boot, rng)
        w_tuned = stratified_bootstrap_weights(t.strata, config.n_boot, rng)
        joint_counts = np.concatenate([w_base * b.n, w_tuned * t.n], axis=1)
    base_boot, base_var = _boot_moments(w_base, b.values, b.n)
    tuned_boot, tuned_var = _boot_moments(w_tuned, t.values, t.n)
    diff_boot = tuned_boot - base_boot
    j = hedges_correction(b.n, t.n)
    pooled_boot = ((b.n - 1) * base_var + (t.n - 1) * tuned_var) / (b.n + t.n - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        g_boot = np.where(pooled_boot > 0, j * diff_boot / np.sqrt(pooled_boot), np.nan)

    level = config.level
    # resampling units behind each interval: prompts, or completions (the smaller model's count)
    if resample == "prompts":
        units, groups, base_units, tuned_units = len(shared), 1, len(shared), len(shared)
    else:
        units, groups, base_units, tuned_units = min(b.n, t.n), len(shared), b.n, t.n
    if resample == "prompts":  # means and differences: the cluster t interval (bootstrap: g, length effect)
        intervals = [(cluster_interval(b.values[:, i], b.strata, level=level),
                      cluster_interval(t.values[:, i], t.strata, level=level),
                      cluster_interval(t.values[:, i], t.strata, paired=b.values[:, i], paired_clusters=b.strata,
                                       level=level)) for i in range(len(columns))]
        base_lo, base_hi, tuned_lo, tuned_hi, diff_lo, diff_hi = (
            np.array([getattr(row[m], side) for row in intervals]) for m in range(3) for side in ("low", "high"))
    else:
        base_lo, base_hi = percentile_interval(base_boot, level, base_units, groups)
        tuned_lo, tuned_hi = percentile_interval(tuned_boot, level, tuned_units, groups)
        diff_lo, diff_hi = percentile_interval(diff_boot, level, units, groups)
    g_lo, g_hi = percentile_interval(g_boot, level, units, groups)
    d = cohens_d(b.values, t.values)
    if config.test == "permutation":
        p = permutation_pvalues(b.values, t.values, b.strata, t.strata, config.n_perm, rng)
    else:
        p = welch_pvalues(b.values, t.values)

    family_names = set(names if family is None else family)
    unknown = family_names - set(names)
    if unknown:
        raise ValueError(f"FDR family names {sorted(unknown)} are not among the compared ROIs.")
    in_family = np.array([c in family_names for c in columns])
    q = np.full(len(columns), np.nan)
    q[in_family] = bh_qvalues(p[in_family])

    adjusted, length_note = length_adjusted_effects(b, t, joint_counts, level, units, groups)

    rows = []
    for i, name in enumerate(columns):
        rows.append(ROIComparison(
            name=name,
            base=Interval(float(b.values[:, i].mean()), float(base_lo[i]), float(base_hi[i])),
            tuned=Interval(float(t.values[:, i].mean()), float(tuned_lo[i]), float(tuned_hi[i])),
            diff=Interval(float(t.values[:, i].mean() - b.values[:, i].mean()), float(diff_lo[i]), float(diff_hi[i])),
            cohens_d=float(d[i]),
            hedges_g=Interval(float(j * d[i]), float(g_lo[i]), float(g_hi[i])),
            p_value=float(p[i]),
            q_value=None if not in_family[i] else float(q[i]),
            length_adjusted=None if adjusted is None else adjusted[i],
            in_family=bool(in_family[i]),
        ))
    selectivity = None
    if selectivity_name is not None:
        selectivity = rows.pop()

    length = None
    if b.lengths is not None and t.lengths is not None:
        lw = (cluster_interval(t.lengths, t.strata, paired=b.lengths, paired_clusters=b.strata, level=level)
              if resample == "prompts" else bootstrap_length_diff(b, t, w_base, w_tuned, level, units, groups))
        length = LengthSummary(float(b.lengths.mean()), float(t.lengths.mean()), lw, length_note)
    method = {
        "unit": "one completion; value = ROI mean over its vertices and all frames",
        "bootstrap": (f"means and differences: cluster-robust t interval over {len(shared)} prompts (P − 1 degrees of "
                      "freedom, paired across models), so CIs include prompt-to-prompt variation; Hedges' g and the "
                      f"length-adjusted effect: expanded percentile (Hesterberg), {config.n_boot} replicates, whole "
                      "prompts resampled" if resample == "prompts" else
                      f"expanded percentile (Hesterberg), {config.n_boot} replicates, completions resampled within each prompt and model: "
                      f"CIs are conditional on these {len(shared)} prompt(s)"
                      + (f" (fewer than {config.min_prompts_for_cluster}, too few to resample prompts)"
                         if config.resample == "auto" else "")),
        "test": (f"permutation of model labels within each prompt, {config.n_perm} permutations, two-sided"
                 if config.test == "permutation" else "Welch t-test (unequal variances), two-sided, prompts ignored"),
        "fdr": f"Benjamini–Hochberg over {int(in_family.sum())} ROIs (q-values); selectivity is a planned contrast "
               "outside the family",
        "effect_size": "Cohen's d with pooled SD; Hedges' g = J·d, J = 1 − 3/(4(n_b+n_t) − 9); g CI by bootstrap",
        "length_check": "OLS value ~ model + words + prompt; the model coefficient with a bootstrap CI"
                        + (f" ({length_note})" if length_note else ""),
    }
    method["resample"] = resample
    return ComparisonStats(rows, target, selectivity, length, b.n, t.n, len(shared), config, method)


def bootstrap_length_diff(base: ModelSample, tuned: ModelSample, w_base: np.ndarray, w_tuned: np.ndarray,
                          level: float, units: int | None = None, groups: int = 1) -> Interval:
    diff = w_tuned @ tuned.lengths - w_base @ base.lengths
    low, high = percentile_interval(diff, level, units, groups)
    return Interval(float(tuned.lengths.mean() - base.lengths.mean()), float(low), float(high))
