"""How good is a posterior? Recovery, Bayes RMSE, entanglement, calibration and contraction, side by
side with the text-only cycle-consistency baseline; written as JSON, PNGs and an index.html."""

from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import versions
from brainrl.sbi.simulation.prior import PARAM_NAMES, PRIOR_VARIANCE

log = logging.getLogger(__name__)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r, NaN when fewer than 3 cases or a constant side."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def cross_correlation(estimates: np.ndarray) -> np.ndarray:
    """6×6 Pearson correlation between the estimated dimensions across cases (≈ identity if disentangled,
    since the prior is independent)."""
    estimates = np.asarray(estimates, dtype=float)
    if len(estimates) < 3:
        return np.full((estimates.shape[1],) * 2, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(estimates, rowvar=False)


def point_metrics(estimates: np.ndarray, theta: np.ndarray, names: Sequence[str] = PARAM_NAMES) -> dict[str, Any]:
    """Metrics of point estimates (n, 6) against the true θ (n, 6). A point estimate has no spread, so its
    Bayes RMSE equals its RMSE."""
    estimates, theta = np.asarray(estimates, float), np.asarray(theta, float)
    if estimates.shape != theta.shape:
        raise ValueError(f"estimates {estimates.shape} and theta {theta.shape} must have the same shape.")
    rmse = np.sqrt(np.mean((estimates - theta) ** 2, axis=0))
    cross = cross_correlation(estimates)
    off = cross[~np.eye(len(names), dtype=bool)]
    return {
        "n_cases": int(len(theta)),
        "pearson_r": {n: pearson(estimates[:, j], theta[:, j]) for j, n in enumerate(names)},
        "rmse": {n: float(rmse[j]) for j, n in enumerate(names)},
        "bayes_rmse": {n: float(rmse[j]) for j, n in enumerate(names)},
        "cross_correlation": cross.tolist(),
        "mean_abs_off_diagonal": float(np.nanmean(np.abs(off))) if off.size else float("nan"),
    }


def posterior_metrics(draws: np.ndarray, theta: np.ndarray, names: Sequence[str] = PARAM_NAMES,
                      seed: int = 0) -> dict[str, Any]:
    """Metrics of posterior draws (n, S, 6): point metrics of the posterior mean, plus
    Bayes RMSE = sqrt(mean over cases of E_q[(θ̃ − θ)²]) (it charges the posterior spread),
    contraction = 1 − mean posterior variance / prior variance (1/12 for U(0, 1)), and
    calibration log γ (BayesFlow; < 0 rejects uniform ranks at 5%)."""
    draws, theta = np.asarray(draws, float), np.asarray(theta, float)
    if draws.ndim != 3 or draws.shape[0] != theta.shape[0] or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"draws must be (n, S, {theta.shape[1]}) for theta {theta.shape}; got {draws.shape}.")
    out = point_metrics(draws.mean(axis=1), theta, names)
    bayes = np.sqrt(np.mean((draws - theta[:, None, :]) ** 2, axis=(0, 1)))
    out["bayes_rmse"] = {n: float(bayes[j]) for j, n in enumerate(names)}
    post_var = draws.var(axis=1).mean(axis=0)
    out["posterior_contraction"] = {n: float(1 - post_var[j] / PRIOR_VARIANCE) for j, n in enumerate(names)}
    out["posterior_sd"] = {n: float(np.sqrt(post_var[j])) for j, n in enumerate(names)}
    out["calibration_log_gamma"] = calibration_log_gamma(draws, theta, names, seed)
    return out


def calibration_log_gamma(draws: np.ndarray, theta: np.ndarray, names: Sequence[str], seed: int = 0) -> dict[str, float]:
    from brainrl.sbi.inference.estimator import import_bayesflow

    bf = import_bayesflow()
    state = np.random.get_state()
    np.random.seed(seed)  # its null distribution is simulated with numpy's global generator
    try:
        values = bf.diagnostics.metrics.calibration_log_gamma(draws, theta)["values"]
    finally:
        np.random.set_state(state)
    return {n: float(v) for n, v in zip(names, np.asarray(values).ravel())}


# -- plots --------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def plot_posterior(draws: np.ndarray, theta: np.ndarray, out_dir: Path, names: Sequence[str] = PARAM_NAMES) -> dict[str, str]:
    """BayesFlow's recovery and calibration-ECDF (95% simultaneous bands) figures."""
    from brainrl.sbi.inference.estimator import import_bayesflow

    bf = import_bayesflow()
    return {
        "recovery": _save(bf.diagnostics.recovery(draws, theta, variable_names=list(names)), out_dir / "sbi_recovery.png"),
        "calibration_ecdf": _save(bf.diagnostics.calibration_ecdf(draws, theta, variable_names=list(names),
                                                                  difference=True), out_dir / "sbi_calibration_ecdf.png"),
    }


def plot_point_recovery(estimates: np.ndarray, theta: np.ndarray, path: Path, title: str,
                        names: Sequence[str] = PARAM_NAMES) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3))
    for j, (ax, name) in enumerate(zip(axes, names)):
        ax.scatter(theta[:, j], estimates[:, j], s=8, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nr = {pearson(estimates[:, j], theta[:, j]):.2f}",
               xlabel="true θ")
    axes[0].set_ylabel("estimate")
    fig.suptitle(title)
    return _save(fig, path)


def plot_cross_correlations(matrices: dict[str, np.ndarray], path: Path, names: Sequence[str] = PARAM_NAMES) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.5 * len(matrices), 4), squeeze=False)
    for ax, (label, matrix) in zip(axes[0], matrices.items()):
        im = ax.imshow(np.asarray(matrix, float), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), title=f"{label}: estimate cross-correlation")
        ax.set_xticklabels([n[:4] for n in names], rotation=45)
        ax.set_yticklabels([n[:4] for n in names])
        for (a, b), v in np.ndenumerate(np.asarray(matrix, float)):
            ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    return _save(fig, path)


def plot_r_comparison(results: dict[str, dict[str, Any]], path: Path, names: Sequence[str] = PARAM_NAMES) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(len(results), 1)
    for i, (label, metrics) in enumerate(results.items()):
        ax.bar(np.arange(len(names)) + i * width, [metrics["pearson_r"][n] for n in names], width, label=label)
    ax.set(xticks=np.arange(len(names)) + width * (len(results) - 1) / 2, ylabel="Pearson r (posterior mean / score)",
           ylim=(-0.2, 1), title="Recovery of θ per dimension")
    ax.set_xticklabels(names, rotation=20)
    ax.axhline(0, color="k", lw=0.8)
    ax.legend()
    return _save(fig, path)


# -- the report ---------------------------------------------------------------------------------------
def metrics_table(results: dict[str, dict[str, Any]], names: Sequence[str] = PARAM_NAMES) -> str:
    """Markdown table of the main numbers, one row per (method, metric)."""
    rows = ["| method | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, metrics in results.items():
        for key in ("pearson_r", "bayes_rmse", "posterior_contraction", "calibration_log_gamma"):
            if metrics.get(key):
                rows.append(f"| {label} | {key} | " + " | ".join(f"{metrics[key][n]:.3f}" for n in names) + " |")
    return "\n".join(rows)


def write_index(out_dir: Path, title: str, results: dict[str, Any], images: dict[str, str], notes: Sequence[str]) -> Path:
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    parts.append("<pre>" + html.escape(metrics_table(results)) + "</pre>")
    parts.append("<p><a href='diagnostics.json'>diagnostics.json</a> (all numbers)</p>")
    for label, name in images.items():
        parts.append(f"<h2>{html.escape(label)}</h2><img src='{html.escape(name)}' style='max-width:100%'>")
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts))
    return path


@dataclass
class DiagnoseConfig:
    n_samples: int = 500
    split: str = "test"  # "test" = the fit's held-out ids when --data is the training campaign; "all" = every row
    max_cases: int | None = None
    seed: int = 0
    cycle: Any = None  # brainrl.sbi.judges.cycle.CycleConfig, "judge" (the text judge), or None to skip the baseline
    sampler: dict[str, Any] = field(default_factory=dict)  # overrides the posterior's ODE settings


def diagnose(posterior_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
             config: DiagnoseConfig | None = None, *, posterior: Any = None, cycle_evaluator: Any = None) -> dict[str, Any]:
    """Evaluate a posterior on a campaign's held-out cases (and the cycle baseline on the same cases)."""
    from brainrl.sbi.simulation.campaign import load_campaign_arrays
    from brainrl.sbi.inference.estimator import Posterior, heldout_rows

    config = config or DiagnoseConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    posterior = posterior or Posterior.load(posterior_dir)
    arrays = load_campaign_arrays(data_dir)
    ids = arrays["ids"]
    trained_on = arrays["manifest"].get("fingerprint") in {c.get("fingerprint")
                                                           for c in posterior.meta.get("campaigns", [])}
    if config.split == "all":
        rows = np.arange(len(ids))
        which = "all rows" + ("" if not trained_on else " (including training items)")
    else:
        # the posterior's id-based split rule: for a training campaign exactly the items the fit held out; for
        # another campaign the same hash subset, so cross-generator tables compare like with like
        rows = heldout_rows(ids, posterior.meta, config.split)
        which = f"the '{config.split}' ids of the posterior's split rule" + (
            " (held out by the fit)" if trained_on else " (a campaign the posterior was not trained on)")
    if config.max_cases:
        rows = rows[: config.max_cases]
    if len(rows) < 3:
        raise ValueError(f"only {len(rows)} cases to diagnose ({which}); use --split all or a larger campaign.")
    if posterior.projection.fingerprint() != arrays["projection"].fingerprint():
        raise ValueError("the campaign's projection differs from the posterior's; its stored coefficients are not "
                         "comparable. Diagnose with data from the training campaign's projection.")
    theta = arrays["theta"][rows].astype(float)
    started = time.time()
    draws = posterior.sample((arrays["coeffs"][rows], arrays["mask"][rows]), config.n_samples, seed=config.seed,
                             **config.sampler)
    sample_seconds = time.time() - started
    names = posterior.param_names
    results: dict[str, Any] = {"sbi": posterior_metrics(draws, theta, names, config.seed)}
    figs = plot_posterior(draws, theta, out_dir, names)
    images = {"SBI recovery (posterior median, 95% CI)": figs["recovery"],
              "SBI calibration (rank ECDF difference, 95% bands)": figs["calibration_ecdf"]}
    cross = {"SBI": np.asarray(results["sbi"]["cross_correlation"])}
    cycle_info = None
    if cycle_evaluator is None and config.cycle == "judge":
        from brainrl.sbi.judges.text import JudgeEvaluator

        cycle_evaluator = JudgeEvaluator()
    elif cycle_evaluator is None and config.cycle is not None:
        from brainrl.sbi.judges.cycle import CycleEvaluator

        cycle_evaluator = CycleEvaluator.from_config(config.cycle)
    if cycle_evaluator is not None:
        started_cycle = time.time()
        outcome = cycle_evaluator.evaluate([arrays["headlines"][r] for r in rows], ids=ids[rows])
        valid = outcome.valid
        identity = cycle_evaluator.identity() if hasattr(cycle_evaluator, "identity") else \
            cycle_evaluator.generator.identity()
        cycle_info = {"evaluator": identity, "n_valid": int(valid.sum()),
                      "n_failed": int((~valid).sum()), "seconds": round(time.time() - started_cycle, 1),
                      "failures": [{"id": int(ids[r]), "reason": why} for r, why, ok in zip(rows, outcome.reasons, valid)
                                   if not ok]}
        if valid.sum() >= 3:
            results["cycle"] = point_metrics(outcome.scores[valid], theta[valid], names)
            # SBI on exactly the cases the evaluator answered, for a like-for-like comparison
            results["sbi_on_cycle_cases"] = posterior_metrics(draws[valid], theta[valid], names, config.seed)
            cross["cycle"] = np.asarray(results["cycle"]["cross_correlation"])
            images["Cycle-consistency recovery"] = plot_point_recovery(
                outcome.scores[valid], theta[valid], out_dir / "cycle_recovery.png", "Cycle consistency (text only)", names)
        else:
            log.warning("cycle evaluator answered only %d of %d cases; no cycle metrics", valid.sum(), len(valid))
    images["Cross-correlation of estimates"] = plot_cross_correlations(cross, out_dir / "cross_correlation.png", names)
    comparable = {k: v for k, v in results.items() if k in ("sbi", "cycle")}
    images["Pearson r per dimension"] = plot_r_comparison(comparable, out_dir / "pearson_r.png", names)
    report = {
        "posterior": str(posterior_dir), "data": str(data_dir), "cases": which, "n_cases": int(len(rows)),
        "trained_on_this_campaign": bool(trained_on), "case_ids": [int(i) for i in ids[rows]], "n_samples": config.n_samples, "seed": config.seed,
        "sample_seconds": round(sample_seconds, 2), "param_names": list(names), "results": results, "cycle": cycle_info,
        "generator": sorted(set(arrays["generator"])), "versions": versions(("brainrl", "numpy", "torch", "keras", "bayesflow")),
        "images": images,
    }
    (out_dir / "diagnostics.json").write_text(json.dumps(report, indent=1))
    notes = [f"{len(rows)} cases ({which}); {config.n_samples} posterior draws per case; generator(s): "
             f"{', '.join(report['generator'])}.",
             "pearson_r: of the posterior mean (SBI) or the evaluator's score (cycle). bayes_rmse: sqrt of the expected "
             "squared error under the posterior. calibration_log_gamma < 0 rejects calibration at 5%."]
    if cycle_info:
        notes.append(f"Cycle evaluator {cycle_info['evaluator']}: {cycle_info['n_valid']} valid, "
                     f"{cycle_info['n_failed']} failed after retries.")
    write_index(out_dir, "brainrl SBI diagnostics", results, images, notes)
    return report


def judge_campaigns(campaign_dirs: Sequence[str | Path], out_dir: str | Path, judge_path: str | Path | None = None,
                    max_items: int = 1000) -> dict[str, Any]:
    """Generator fidelity: the judge's r between θ̂(text) and the θ each campaign item was written for."""
    from brainrl.sbi.simulation.campaign import load_campaign_arrays
    from brainrl.sbi.judges.text import TextJudge

    judge = TextJudge.load(judge_path)
    results: dict[str, Any] = {}
    for campaign in campaign_dirs:
        arrays = load_campaign_arrays(campaign)
        rows = np.arange(min(len(arrays["ids"]), max_items))
        estimates = judge.predict([arrays["texts"][r] for r in rows])
        metrics = point_metrics(estimates, arrays["theta"][rows].astype(float))
        results[str(campaign)] = {"generator": sorted(set(arrays["generator"])), "n": int(len(rows)),
                                  "pearson_r": metrics["pearson_r"], "rmse": metrics["rmse"],
                                  "mean_abs_off_diagonal": metrics["mean_abs_off_diagonal"]}
    lines = ["| campaign (generator) | n | " + " | ".join(PARAM_NAMES) + " |", "|---|---|" + "---|" * len(PARAM_NAMES)]
    for campaign, res in results.items():
        r = res["pearson_r"]
        lines.append(f"| {campaign} ({', '.join(res['generator'])}) | {res['n']} | "
                     + " | ".join(f"{r[name]:.2f}" for name in PARAM_NAMES) + " |")
    report = {"judge": judge.card, "results": results, "table": "\n".join(lines)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "judge_fidelity.json").write_text(json.dumps(report, indent=1, default=float))
    return report
