"""Markdown tables of a `brainrl validate` result (validation.json): per judge, base, tuned and tuned − base
with their 95% CIs, overall and per dimension, beside the text-ignoring baseline.

    python scripts/theta_tables.py runs/offline_theta_headline_awsft/validation/validation.json
    python scripts/theta_tables.py runs/offline_theta_headline_awsft/validation/validation.json --text-judge-spread

Rows: the distance −‖θ̂ − θ*‖² over all six dimensions (the training posterior's is E_q over its draws,
the reward's form; a point judge's is its squared error), then per dimension the RMSE of the estimate
(prompt jackknife t CI) and the tuned − base change of the squared error (prompt-clustered t interval,
paired by prompt; negative = closer to θ*). "text-ignoring" is the same distance for a decoder
that answers the prior (the prior mean for a point judge) whatever the text.

``--text-judge-spread`` adds, from the ``completions.jsonl`` beside the json, the packaged text judge's
estimates per model: their SD per dimension, the least-squares slope of θ̂ on θ* and the mean |θ̂ − 0.5|.
A text-judge distance gain with a smaller SD and an unchanged slope is a move toward the middle (what the
text-ignoring baseline would gain), not θ-following.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

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
        label = labels.get(key) or (f"second posterior, fit {key.rsplit('_', 1)[1]} alone"
                                    if key.startswith("second_posterior_") else key)
        out.append(judge_table(label, entry, names))
    n = result["models"]["base"]["n_completions"]
    out.append(f"{result['n_prompts']} held-out prompts, {n} completions per model; adapter {result.get('adapter')}")
    return "\n\n".join(out)


def spread_table(estimates: dict[str, np.ndarray], targets: dict[str, np.ndarray], names: list[str]) -> str:
    """Per model: SD of the estimates, slope of estimate on θ* (least squares) and mean |estimate − 0.5|."""
    lines = ["| model | " + " | ".join(f"{n}: SD · slope" for n in names) + " | mean SD | mean abs(θ̂ − 0.5) |",
             "|---|" + "---|" * (len(names) + 2)]
    for model, est in estimates.items():
        est, theta = np.asarray(est, np.float64), np.asarray(targets[model], np.float64)
        if est.shape != theta.shape or est.shape[1] != len(names) or len(est) < 2:
            raise ValueError(f"{model}: estimates {est.shape} and θ* {theta.shape} must both be (n ≥ 2, "
                             f"{len(names)}); pass one estimate and one θ* per completion.")
        sd = est.std(axis=0)
        centred = theta - theta.mean(axis=0)
        slope = (centred * (est - est.mean(axis=0))).sum(axis=0) / (centred ** 2).sum(axis=0)
        cells = " | ".join(f"{s:.3f} · {b:+.3f}" for s, b in zip(sd, slope))
        lines.append(f"| {model} | {cells} | {sd.mean():.3f} | {np.abs(est - 0.5).mean():.3f} |")
    return "\n".join(lines)


def text_judge_spread(completions: Path, names: list[str], text_format: str = "campaign") -> str:
    """Rescore a validation's completions with the packaged text judge (as `brainrl validate` feeds it)."""
    from brainrl.sbi.inference.decode import campaign_text
    from brainrl.sbi.judges.text import TextJudge

    if not completions.is_file():
        raise SystemExit(f"{completions} not found: --text-judge-spread reads the completions.jsonl that "
                         "`brainrl validate` writes beside validation.json.")
    rows = [json.loads(line) for line in completions.read_text().splitlines() if line.strip()]
    judge = TextJudge.load(None)
    spoken = [(campaign_text(r["completion"] or "") if text_format == "campaign" else r["completion"]) for r in rows]
    estimates, targets = {}, {}
    for model in dict.fromkeys(r["model"] for r in rows):
        kept = [(text, r) for text, r in zip(spoken, rows) if r["model"] == model and text]
        estimates[model] = judge.predict([text for text, _ in kept])
        targets[model] = np.array([r["theta_target"] for _, r in kept])
    return spread_table(estimates, targets, names)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--text-judge-spread"]
    if len(args) != 1:
        raise SystemExit("usage: python scripts/theta_tables.py VALIDATION_JSON [--text-judge-spread]")
    result = json.loads(Path(args[0]).read_text())
    print(tables(result))
    if "--text-judge-spread" in sys.argv:
        print("\n**text judge's estimates: spread and slope on θ***\n")
        print(text_judge_spread(Path(args[0]).with_name("completions.jsonl"), result["param_names"],
                                result["config"].get("text_format", "campaign")))
