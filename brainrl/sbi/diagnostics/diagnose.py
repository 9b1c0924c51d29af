"""How good is a posterior? ``diagnose`` runs the checks of this package on a campaign's held-out cases
(recovery, Bayes RMSE, entanglement, calibration and contraction), side by side with a text-only baseline
(the cycle-consistency evaluator or the text judge), and writes JSON, PNGs and an index.html."""

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
from brainrl.sbi.diagnostics.plots import plot_cross_correlations, plot_point_recovery, plot_posterior, plot_r_comparison
from brainrl.sbi.diagnostics.recovery import point_metrics, posterior_metrics
from brainrl.sbi.simulation.prior import PARAM_NAMES

log = logging.getLogger(__name__)


def metrics_table(results: dict[str, dict[str, Any]], names: Sequence[str] = PARAM_NAMES) -> str:
    """Markdown table of the main numbers, one row per (method, metric)."""
    rows = ["| method | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, metrics in results.items():
        for key in ("pearson_r", "bayes_rmse", "posterior_contraction", "calibration_log_gamma", "ecdf_band_excursion"):
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
             "squared error under the posterior. calibration_log_gamma < 0 rejects calibration at 5%; "
             "ecdf_band_excursion > 0: the rank ECDF leaves the 95% simultaneous band of the calibration figure."]
    if cycle_info:
        notes.append(f"Cycle evaluator {cycle_info['evaluator']}: {cycle_info['n_valid']} valid, "
                     f"{cycle_info['n_failed']} failed after retries.")
    write_index(out_dir, "brainrl SBI diagnostics", results, images, notes)
    return report
