"""Do the independent judges read off-form completions? A validation's outputs split by their form.

A θ validation (``brainrl validate``) saves each completion and the training posterior's decoded mean, not the
second posterior's. This script re-decodes a validation's ``completions.jsonl`` with the **second (disjoint)
posterior** (same campaign text format and pipeline as ``validate``: ``campaign_text`` → the posterior's
campaign pipeline; its OOD statistics cross-fitted on its own campaign, in memory, never written beside it) and
the text judge, and reports, per model and per form class (one line vs several lines; stopped vs cut at the
token limit), how far each judge's estimates sit from θ* and from the prior's centre:

- ``distance``: −‖θ̂ − θ*‖² over the six dimensions (the validation's primary metric);
- ``|θ̂ − 0.5|`` and the SD of θ̂ across items: a decoder that cannot read a text answers near its prior
  (0.5, small spread);
- the OOD distance (Mahalanobis, the disjoint posterior's summaries) and the fraction flagged at p < 0.05;
- the tuned − base distance restricted to the completions of one form, per judge.

    python scripts/theta_form_split.py runs/RUN/validation_seed3000/completions.jsonl \\
        --second-posterior runs/sbi_disjoint/posterior --max-new-tokens 32 --out runs/RUN/form_split.json

CPU-bound (espeak, the synthetic model, one posterior, the text judge); timings are not its point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CENTRE = 0.5


def is_multiline(text: str) -> bool:
    """More than one non-empty line."""
    return sum(1 for line in (text or "").splitlines() if line.strip()) > 1


def at_limit(n_tokens: int, max_new_tokens: int) -> bool:
    """The completion used every new token it was allowed (generation cut, not stopped)."""
    return int(n_tokens) >= int(max_new_tokens)


def judge_summary(estimates: np.ndarray, targets: np.ndarray, mask: np.ndarray,
                  ood_distance: np.ndarray | None = None, flagged: np.ndarray | None = None) -> dict[str, Any]:
    """Distance to θ*, distance to the prior's centre and spread of one judge's estimates over ``mask`` rows."""
    rows = mask & np.isfinite(estimates).all(axis=1)
    out: dict[str, Any] = {"n": int(rows.sum())}
    if not rows.any():
        return out
    est, tgt = estimates[rows], targets[rows]
    out["distance"] = float(-((est - tgt) ** 2).sum(axis=1).mean())
    out["abs_from_centre"] = float(np.abs(est - CENTRE).mean())
    out["sd"] = float(est.std(axis=0).mean()) if rows.sum() > 1 else float("nan")
    if ood_distance is not None:
        out["ood_distance_median"] = float(np.median(ood_distance[rows]))
        out["ood_flagged"] = float(flagged[rows].mean())
    return out


def paired_form_difference(distance: np.ndarray, model: np.ndarray, prompt: np.ndarray, keep: np.ndarray
                           ) -> dict[str, float] | None:
    """Tuned − base of per-prompt mean distance over the ``keep`` completions, prompts that have both; t interval
    over prompts (``report.stats.cluster_interval`` with one value a prompt)."""
    from brainrl.report.stats import cluster_interval

    diffs = []
    for p in np.unique(prompt):
        sel = keep & (prompt == p) & np.isfinite(distance)
        base, tuned = distance[sel & (model == "base")], distance[sel & (model == "tuned")]
        if len(base) and len(tuned):
            diffs.append(tuned.mean() - base.mean())
    if len(diffs) < 3:
        return None
    diffs = np.asarray(diffs)
    interval = cluster_interval(diffs, np.arange(len(diffs)))
    return {"mean": interval.estimate, "ci_low": interval.low, "ci_high": interval.high, "n_prompts": len(diffs)}


def split_table(rows: Sequence[dict[str, Any]], estimates: dict[str, np.ndarray], n_tokens: np.ndarray,
                max_new_tokens: int, ood_distance: np.ndarray | None = None, flagged: np.ndarray | None = None
                ) -> dict[str, Any]:
    """Per model × form class × judge summaries, and tuned − base within each form class."""
    model = np.array([r["model"] for r in rows])
    prompt = np.array([r["prompt_id"] for r in rows])
    targets = np.array([r["theta_target"] for r in rows], float)
    multi = np.array([is_multiline(r["completion"]) for r in rows])
    limit = np.array([at_limit(n, max_new_tokens) for n in n_tokens])
    classes = {"all": np.ones(len(rows), bool), "one line": ~multi, "several lines": multi,
               "stopped": ~limit, "at token limit": limit, "one line, stopped": ~multi & ~limit}
    out: dict[str, Any] = {"counts": {}, "judges": {}, "tuned_minus_base": {}}
    for name in sorted(set(model)):
        out["counts"][name] = {c: int((m & (model == name)).sum()) for c, m in classes.items()}
    for judge, est in estimates.items():
        use_ood = judge == "second_posterior" and ood_distance is not None
        out["judges"][judge] = {name: {c: judge_summary(est, targets, m & (model == name),
                                                        ood_distance if use_ood else None,
                                                        flagged if use_ood else None)
                                       for c, m in classes.items()} for name in sorted(set(model))}
        distance = -((est - targets) ** 2).sum(axis=1)
        out["tuned_minus_base"][judge] = {c: paired_form_difference(distance, model, prompt, m)
                                          for c, m in classes.items()}
    return out


def print_table(table: dict[str, Any]) -> None:
    print("counts:", json.dumps(table["counts"]))
    for judge, per_model in table["judges"].items():
        print(f"\n**{judge}**\n")
        print("| model | form | n | distance | mean abs(θ̂ − 0.5) | mean SD of θ̂ | OOD distance (median) | OOD flagged |")
        print("|---|---|---|---|---|---|---|---|")
        for name, classes in per_model.items():
            for c, s in classes.items():
                if not s.get("n"):
                    continue
                print(f"| {name} | {c} | {s['n']} | {s['distance']:+.3f} | {s['abs_from_centre']:.3f} | {s['sd']:.3f} | "
                      f"{s.get('ood_distance_median', float('nan')):.2f} | {s.get('ood_flagged', float('nan')):.2f} |")
        print("\ntuned − base distance within a form class (per-prompt means, prompts with both):")
        for c, d in table["tuned_minus_base"][judge].items():
            if d:
                print(f"  {c}: {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] ({d['n_prompts']} prompts)")


def decode(rows, second_posterior: str, n_samples: int, seed: int):
    """The second posterior's mean estimate, its OOD distance/flag, and the text judge's estimate per row."""
    from brainrl.brain.base import BrainMap
    from brainrl.brain.pipeline import BrainPipeline
    from brainrl.sbi.inference.decode import campaign_text, posterior_pipeline
    from brainrl.sbi.inference.estimator import Posterior
    from brainrl.sbi.inference.ood import fit_ood
    from brainrl.sbi.judges.text import TextJudge
    from brainrl.sbi.theta.validate import spoken_maps

    posterior = Posterior.load(second_posterior)
    reference = fit_ood(posterior, None, None)  # in memory: nothing is written beside the posterior
    pipeline = BrainPipeline.shared(posterior_pipeline(posterior.meta))
    texts = [r["completion"] for r in rows]
    maps = spoken_maps(texts, pipeline, "campaign")
    ok = np.array([isinstance(m, BrainMap) for m in maps])
    n = len(rows)
    mean = np.full((n, 6), np.nan)
    distance, flagged = np.full(n, np.nan), np.zeros(n, bool)
    inputs = posterior.prepare([m for m, good in zip(maps, ok) if good])
    mean[ok] = posterior.sample(inputs, n_samples, seed=seed).mean(axis=1)
    scores = reference.score(posterior.summaries(inputs), 0.05)
    distance[ok], flagged[ok] = scores.distance, scores.flagged
    spoken = [campaign_text(t) for t in texts]
    judge = TextJudge.load(None)
    text_est = np.full((n, 6), np.nan)
    has = np.array([bool(t) for t in spoken])
    text_est[has] = judge.predict([t for t in spoken if t])
    return mean, distance, flagged, text_est


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("completions", help="a validation's completions.jsonl")
    parser.add_argument("--second-posterior", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.completions).read_text().splitlines() if line.strip()]
    from brainrl.policy import load_policy

    _, tokenizer = load_policy("smollm2", "auto", "cpu")
    n_tokens = np.array([len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows])
    cache = Path(args.out).with_suffix(".npz")
    if cache.is_file():
        saved = np.load(cache)
        mean, distance, flagged, text_est = saved["mean"], saved["distance"], saved["flagged"], saved["text"]
    else:
        mean, distance, flagged, text_est = decode(rows, args.second_posterior, args.n_samples, args.seed)
        np.savez(cache, mean=mean, distance=distance, flagged=flagged, text=text_est)
    training = np.array([r["decoded_mean"] if r.get("decoded_mean") else [np.nan] * 6 for r in rows], float)
    table = split_table(rows, {"training_posterior": training, "second_posterior": mean, "text_judge": text_est},
                        n_tokens, args.max_new_tokens, distance, flagged)
    table["source"] = {"completions": args.completions, "second_posterior": args.second_posterior,
                       "n_samples": args.n_samples, "seed": args.seed, "max_new_tokens": args.max_new_tokens}
    Path(args.out).write_text(json.dumps(table, indent=1))
    print_table(table)


if __name__ == "__main__":
    main()
