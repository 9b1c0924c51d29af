"""Generator fidelity: how well the independent text judge reads back from each campaign's texts the θ its
items were written for (a generator that does not express θ caps every posterior trained on it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.sbi.diagnostics.recovery import point_metrics
from brainrl.sbi.simulation.prior import PARAM_NAMES


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
