"""Held-out gain of a surrogate-reward run as a share of a teacher-reward run's, with a prompt bootstrap.

Both runs must be evaluated by ``brainrl evaluate`` on the same held-out prompts and seeds (so their base
completions are the same); both evaluations score with the teacher. For a statistic (default the Broca
selectivity reward), gain = mean(tuned − base) per run; the ratio gain_student / gain_teacher and the
difference get 95% percentile intervals from resampling prompts (completions of a prompt stay together,
and the two runs stay paired by prompt).

    python scripts/surrogate_gain_ratio.py --teacher runs/teacher_broca --student runs/student_broca
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def gains_by_prompt(run: Path, statistic: str) -> dict[str, list[float]]:
    path = run / "eval_completions.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `brainrl evaluate --run {run}` first.")
    out: dict[str, list[float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            values = row.get(statistic)
            if isinstance(values, dict) and values.get("base") is not None and values.get("tuned") is not None:
                out.setdefault(row["prompt"], []).append(values["tuned"] - values["base"])
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="run trained on the teacher reward (evaluated)")
    parser.add_argument("--student", required=True, help="run trained on the surrogate reward (evaluated)")
    parser.add_argument("--statistic", default="broca_minus_global", help="a per-completion key of eval_completions")
    parser.add_argument("--bootstrap", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    teacher = gains_by_prompt(Path(args.teacher), args.statistic)
    student = gains_by_prompt(Path(args.student), args.statistic)
    prompts = sorted(set(teacher) & set(student))
    if len(prompts) < 3:
        raise SystemExit(f"only {len(prompts)} shared held-out prompts with {args.statistic!r}; evaluate both runs.")
    t = [np.array(teacher[p]) for p in prompts]
    s = [np.array(student[p]) for p in prompts]

    def gains(idx):
        gt = np.concatenate([t[i] for i in idx]).mean()
        gs = np.concatenate([s[i] for i in idx]).mean()
        return gt, gs

    gt, gs = gains(range(len(prompts)))
    rng = np.random.default_rng(args.seed)
    draws = np.array([gains(rng.integers(0, len(prompts), len(prompts))) for _ in range(args.bootstrap)])
    ratio = draws[:, 1] / draws[:, 0]
    result = {
        "statistic": args.statistic, "prompts": len(prompts),
        "teacher_gain": float(gt), "teacher_gain_ci": np.percentile(draws[:, 0], [2.5, 97.5]).tolist(),
        "student_gain": float(gs), "student_gain_ci": np.percentile(draws[:, 1], [2.5, 97.5]).tolist(),
        "ratio": float(gs / gt), "ratio_ci": np.percentile(ratio, [2.5, 97.5]).tolist(),
        "difference": float(gs - gt), "difference_ci": np.percentile(draws[:, 1] - draws[:, 0], [2.5, 97.5]).tolist(),
        "bootstrap": {"n": args.bootstrap, "seed": args.seed, "unit": "prompt", "interval": "95% percentile"},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
