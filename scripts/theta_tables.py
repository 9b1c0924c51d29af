"""Markdown tables of a `brainrl validate` result (validation.json): per judge, base, tuned and tuned − base
with their 95% CIs, overall and per dimension, beside the text-ignoring baseline.

    python scripts/theta_tables.py runs/offline_theta_headline_awsft/validation/validation.json

Rows: the distance −‖θ̂ − θ*‖² over all six dimensions (the training posterior's is E_q over its draws,
the reward's form; a point judge's is its squared error), then per dimension the RMSE of the estimate
(prompt jackknife t CI) and the tuned − base change of the squared error (prompt-clustered t interval,
paired by prompt; negative = closer to θ*). "text-ignoring" is the same distance for a decoder
that answers the prior (the prior mean for a point judge) whatever the text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from brainrl.sbi.theta.validate import format_stat


def _ci(stat: dict | None, digits: int = 3) -> str:
    return format_stat(stat, digits) if stat else "–"


def judge_table(label: str, entry: dict, names: list[str]) -> str:
    models, diff = entry["models"], entry.get("difference_tuned_minus_base", {})
    base, tuned = models["base"], models.get("tuned")
    lines = [f"**{label}**", "",
             "| | base | tuned | tuned − base |", "|---|---|---|---|",
             f"| distance −‖θ̂ − θ*‖² (6 dims) | {_ci(base['reward'])} | {_ci(tuned['reward']) if tuned else '–'} "
             f"| {_ci(diff.get('reward'))} |",
             f"| text-ignoring baseline, same items | {_ci(base['prior_reference']['reward'])} | "
             f"{_ci(tuned['prior_reference']['reward']) if tuned else '–'} | |",
             f"| gain over the text-ignoring baseline | {_ci(base['prior_reference']['reward_gain'])} | "
             f"{_ci(tuned['prior_reference']['reward_gain']) if tuned else '–'} | |"]
    for name in names:
        rb = base["per_dimension"][name]
        rt = tuned["per_dimension"][name] if tuned else None
        lines.append(f"| {name}: RMSE · r (base → tuned); Δ squared error | {rb['rmse']['value']:.3f} · "
                     f"{rb['pearson_r']['value']:+.2f} | "
                     + (f"{rt['rmse']['value']:.3f} · {rt['pearson_r']['value']:+.2f}" if rt else "–")
                     + f" | {_ci((diff.get('sq_error') or {}).get(name))} |")
    return "\n".join(lines)


def tables(result: dict) -> str:
    names = result["param_names"]
    out = [judge_table("training posterior (the reward's decoder)",
                       {"models": result["models"], "difference_tuned_minus_base":
                        result.get("difference_tuned_minus_base", {})}, names)]
    labels = {"second_posterior": "second posterior (disjoint campaign)", "text_judge": "text judge"}
    for key, entry in result.get("independent_judges", {}).items():
        out.append(judge_table(labels.get(key, key), entry, names))
    n = result["models"]["base"]["n_completions"]
    out.append(f"{result['n_prompts']} held-out prompts, {n} completions per model; adapter {result.get('adapter')}")
    return "\n\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/theta_tables.py VALIDATION_JSON")
    print(tables(json.loads(Path(sys.argv[1]).read_text())))
