"""Cross-generator transfer (the paper's Fig. 3, ``brainrl sbi cross``): every posterior on every campaign's
held-out ids, train on generator A → test on generator B, as Pearson r of the posterior mean per dimension."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from brainrl.provenance import versions
from brainrl.report.stats import pearson
from brainrl.sbi.simulation.prior import PARAM_NAMES


def cross_generator_table(posteriors: dict[str, Any], campaigns: dict[str, str | Path], out_dir: str | Path,
                          n_samples: int = 200, split: str = "auto", seed: int = 0, max_cases: int | None = None,
                          judge: Any = None) -> dict[str, Any]:
    """Pearson r of the posterior mean per dimension for every (posterior, campaign) pair. ``split``:
    ``auto`` = the test ids of a campaign the posterior was trained on, every row of one it never saw;
    ``test``/``val`` = those ids under each posterior's split rule; ``all``. ``max_cases`` caps the rows.
    Each pair also gets calibration (log γ, rank-ECDF band excursion). ``judge`` (a ``TextJudge``,
    ``"packaged"`` or None): add the text judge's r on each campaign's texts (its generator fidelity, the
    text-only bound), every row up to ``max_cases``."""
    from brainrl.sbi.diagnostics.calibration import calibration_log_gamma, ecdf_band_excursion
    from brainrl.sbi.simulation.campaign import load_campaign_arrays
    from brainrl.sbi.inference.estimator import Posterior, heldout_rows

    data = {name: load_campaign_arrays(path) for name, path in campaigns.items()}
    results: dict[str, dict[str, Any]] = {}
    started = time.time()
    for pname, pdir in posteriors.items():
        post = Posterior.load(pdir) if isinstance(pdir, (str, Path)) else pdir
        trained = {c.get("fingerprint") for c in post.meta.get("campaigns", [])}
        for dname, arrays in data.items():
            if post.projection.fingerprint() != arrays["projection"].fingerprint():
                raise ValueError(f"campaign {dname} uses another projection than posterior {pname}; simulate it with "
                                 "`projection_from` pointing at the posterior's campaign projection.")
            seen = arrays["manifest"].get("fingerprint") in trained
            if split == "all" or (split == "auto" and not seen):
                rows = np.arange(len(arrays["ids"]))
            else:
                rows = heldout_rows(arrays["ids"], post.meta, "test" if split == "auto" else split)
            rows = rows[:max_cases] if max_cases else rows
            draws = post.sample((arrays["coeffs"][rows], arrays["mask"][rows]), n_samples, seed=seed)
            means = draws.mean(axis=1)
            theta = arrays["theta"][rows]
            r = {n: pearson(means[:, j], theta[:, j]) for j, n in enumerate(PARAM_NAMES)}
            results[f"{pname} -> {dname}"] = {"posterior": str(pdir) if isinstance(pdir, (str, Path)) else repr(pdir),
                                              "campaign": str(campaigns[dname]),
                                              "n_cases": int(len(rows)), "pearson_r": r,
                                              "trained_on_this_campaign": seen,
                                              "calibration_log_gamma": calibration_log_gamma(draws, theta, PARAM_NAMES, seed),
                                              "ecdf_band_excursion": ecdf_band_excursion(draws, theta, PARAM_NAMES, seed)}
    if judge is not None:
        from brainrl.sbi.judges.text import TextJudge

        judge = judge if isinstance(judge, TextJudge) else TextJudge.load(None if judge == "packaged" else judge)
        for dname, arrays in data.items():
            rows = np.arange(len(arrays["ids"]))[:max_cases] if max_cases else np.arange(len(arrays["ids"]))
            estimates = judge.predict([arrays["texts"][i] for i in rows])
            results[f"text judge -> {dname}"] = {
                "campaign": str(campaigns[dname]), "n_cases": int(len(rows)), "trained_on_this_campaign": False,
                "pearson_r": {n: pearson(estimates[:, j], arrays["theta"][rows, j]) for j, n in enumerate(PARAM_NAMES)}}
    lines = ["| train → test | cases | " + " | ".join(PARAM_NAMES) + " | mean |",
             "|---|---|" + "---|" * (len(PARAM_NAMES) + 1)]
    for key, res in results.items():
        values = [res["pearson_r"][n] for n in PARAM_NAMES]
        kind = "texts" if key.startswith("text judge") else (
            "held-out test" if res["trained_on_this_campaign"] else "unseen campaign")
        lines.append(f"| {key} | {res['n_cases']} {kind} | " + " | ".join(f"{v:.2f}" for v in values)
                     + f" | {np.nanmean(values):.2f} |")
    lines += ["", "| calibration: log γ (< 0 rejects at 5%) / ECDF band excursion (0 = inside) | "
              + " | ".join(PARAM_NAMES) + " |", "|---|" + "---|" * len(PARAM_NAMES)]
    for key, res in results.items():
        if "calibration_log_gamma" in res:
            lines.append(f"| {key} | " + " | ".join(
                f"{res['calibration_log_gamma'][n]:.2f} / {res['ecdf_band_excursion'][n]:.3f}" for n in PARAM_NAMES) + " |")
    report = {"split": split, "n_samples": n_samples, "seed": seed, "results": results, "table": "\n".join(lines),
              "seconds": round(time.time() - started, 1), "versions": versions(("brainrl", "numpy", "bayesflow"))}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cross_generator.json").write_text(json.dumps(report, indent=1))
    (out_dir / "cross_generator.md").write_text(report["table"] + "\n")
    return report
