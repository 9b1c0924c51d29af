"""Best-of-group gains of weighted sums of candidate θ rewards, from a probe's saved scores.

``scripts/theta_reward_probe.py --candidate ... --save-scores S.npz`` keeps every candidate reward's value
for every completion; this scores sums of them (``--combo "1.0*both/all six/mean/log + 0.5*procedural/..."``,
repeatable) exactly as the probe scores one candidate: per prompt group, each independent judge's distance of
the completion the sum ranks first minus the group mean (t interval over prompts), and the within-group
Spearman ρ. A weighted sum of rewards is what a recipe with several ``rewards:`` entries trains on.

    python scripts/theta_reward_combine.py runs/probe5/scores.npz \\
        --combo "1*both/all six/mean/log" --combo "1*both/all six/mean/log + 1*procedural/valence+arousal+dominance/mean/downweight"

``--halves`` repeats each line on the first and second half of the prompts (a split-half check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from theta_reward_probe import _candidate_row  # noqa: E402  (one scoring rule for single and summed rewards)


def parse_combo(text: str) -> list[tuple[float, str]]:
    """``"w1*key1 + w2*key2"`` → [(w1, key1), (w2, key2)]; a term without ``*`` has weight 1."""
    terms = []
    for part in text.split(" + "):
        weight, _, key = part.strip().partition("*") if "*" in part else ("1", "", part.strip())
        terms.append((float(weight), key.strip()))
    return terms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", help="the probe's --save-scores .npz")
    parser.add_argument("--combo", action="append", required=True, help='e.g. "1*both/all six/mean/log + 0.5*form"')
    parser.add_argument("--halves", action="store_true", help="also score each half of the prompts separately")
    args = parser.parse_args()

    data = np.load(args.scores)
    index, theta = data["group"], data["theta"]
    judge_dist = {"disjoint posterior": data["judge_disjoint"], "text judge": data["judge_text"]}
    judge_est = {"disjoint posterior": data["judge_disjoint_mean"], "text judge": data["judge_text_estimate"]}
    n_groups = int(index.max()) + 1
    parts = {"all": range(n_groups)}
    if args.halves:
        parts |= {"first half": range(n_groups // 2), "second half": range(n_groups // 2, n_groups)}

    def cell(v):
        return f"{v['mean']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"

    judges = list(judge_dist)
    print("| reward (weighted sum) | prompts | best-of-G, " + " | best-of-G, ".join(judges) + " | ρ, "
          + " | ρ, ".join(judges) + " |")
    print("|" + "---|" * (2 + 2 * len(judges)))
    for combo in args.combo:
        terms = parse_combo(combo)
        missing = [k for _, k in terms if k not in data.files]
        if missing:
            raise SystemExit(f"{missing[0]!r} is not in {args.scores}; its keys: {', '.join(sorted(data.files))}")
        values = sum(w * np.asarray(data[k], np.float64) for w, k in terms)
        for part, which in parts.items():
            groups = [np.flatnonzero(index == g) for g in which]
            row = _candidate_row(values, groups, judge_dist, judge_est, theta)
            print(f"| {combo} | {part} | " + " | ".join(cell(row[f"best_of_group_gain/{j}"]) for j in judges) + " | "
                  + " | ".join(cell(row[f"within_group_spearman/{j}"]) for j in judges) + " |")


if __name__ == "__main__":
    main()
