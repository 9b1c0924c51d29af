"""Held-out gain of surrogate-reward runs as a share of teacher-reward runs', and their stage times.

Every run must be evaluated by ``brainrl evaluate`` (or the recipe's evaluation after training) on the same
held-out prompts and evaluation seed, so all share the base completions; every evaluation scores with the
teacher. For a statistic (default the Broca selectivity reward), a run's gain is mean(tuned − base).

Several runs per side (``--teacher T0 T1 --student S0 S1``: pairs by position, e.g. training seeds 0 and
1) are pooled: each prompt's gain is averaged over the runs of a side, so the pooled ratio is less at the
mercy of one training trajectory. Intervals come from the evaluation core (``brainrl.report.stats``):
gains and the student − teacher difference get the cluster-robust t interval over prompts (paired by
prompt), the ratio the delete-one-prompt jackknife t interval on the log scale (``jackknife_interval``,
the core's interval for statistics that are not means; NaN if some leave-one-out ratio is not positive)
and, beside it, the expanded percentile interval of the prompt bootstrap (one draw of prompts for both
sides). These cover the held-out prompts' sampling, not the spread between training seeds: the
per-pair ratios are printed beside the pooled one so that spread can be seen.

Stage times come from each run's ``metrics.jsonl`` (generation, reward, update per training step) and
``audit.jsonl`` (the teacher's seconds inside the student's reward stage), summed over steps, with the
student/teacher ratio per pair. Runs of a pair should run side by side (same box, same moment): a shared
box's load moves every absolute number.

    python scripts/surrogate_gain_ratio.py --teacher runs/teacher_broca --student runs/student_broca
    python scripts/surrogate_gain_ratio.py --teacher runs/T_s0 runs/T_s1 --student runs/S_s0 runs/S_s1 --out r.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

STAGES = ("generation_s", "reward_s", "update_s", "step_s")


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


def stage_times(run: Path) -> dict[str, Any]:
    """Seconds per stage summed over the run's training steps (the last record of each step, so a resumed
    run counts each step once), the audit's teacher seconds and the stage shares."""
    import math

    path = run / "metrics.jsonl"
    if not path.exists():
        return {}
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if "step_s" in row and "step" in row:
                by_step[int(row["step"])] = row
    out: dict[str, Any] = {"steps": len(by_step)}
    for stage in STAGES:
        out[stage] = float(sum(r[stage] for r in by_step.values() if math.isfinite(r.get(stage, math.nan))))
    audit = run / "audit.jsonl"
    if audit.exists():
        rows = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines() if line.strip()]
        out["audit_teacher_s"] = float(sum(r.get("teacher_s", 0.0) for r in rows))
        out["audits"] = len(rows)
        out["audit_actions"] = {a: sum(r.get("action") == a for r in rows) for a in {r.get("action") for r in rows}}
    total = out["step_s"] or 1.0
    out["shares"] = {stage: out[stage] / total for stage in STAGES[:-1]}
    return out


def _pooled(runs: list[dict[str, list[float]]], prompts: list[str]):
    """(per-prompt mean gain over runs and completions, completion-level values and their prompt index)."""
    import numpy as np

    per_prompt = np.array([np.mean([np.mean(run[p]) for run in runs]) for p in prompts])
    values = [v for p in prompts for run in runs for v in run[p]]
    index = [i for i, p in enumerate(prompts) for run in runs for _ in run[p]]
    return per_prompt, np.array(values), np.array(index)


def compare(teacher: list[dict[str, list[float]]], student: list[dict[str, list[float]]], *, n_boot: int, seed: int,
            level: float = 0.95) -> dict[str, Any]:
    """Pooled gains, their difference and ratio over the prompts every run shares, with intervals."""
    import numpy as np

    from brainrl.report.stats import cluster_interval, jackknife_interval, percentile_interval, prompt_draws

    prompts = sorted(set.intersection(*(set(run) for run in teacher + student)))
    if len(prompts) < 3:
        raise SystemExit(f"only {len(prompts)} held-out prompts are shared by every run; evaluate them all alike.")
    t_prompt, t_values, t_index = _pooled(teacher, prompts)
    s_prompt, s_values, s_index = _pooled(student, prompts)
    # prompt-level means weigh every prompt equally on both sides, so the pairing is exact
    index = np.arange(len(prompts))
    gain_t = cluster_interval(t_prompt, index, level=level)
    gain_s = cluster_interval(s_prompt, index, level=level)
    diff = cluster_interval(s_prompt, index, paired=t_prompt, level=level)
    draws = prompt_draws(len(prompts), n_boot, np.random.default_rng(seed))  # (n_boot, P) counts
    boot_t = draws @ t_prompt / len(prompts)
    boot_s = draws @ s_prompt / len(prompts)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = boot_s / boot_t
    low, high = percentile_interval(ratios[:, None], level, units=len(prompts))
    # the core's interval for a statistic that is not a mean: delete-one-prompt jackknife t, on the log scale
    jack = jackknife_interval(lambda rows: float(s_prompt[rows].mean() / t_prompt[rows].mean()), index, scale="log",
                              level=level)
    return {
        "prompts": len(prompts), "completions": {"teacher": int(t_values.size), "student": int(s_values.size)},
        "teacher_gain": gain_t.estimate, "teacher_gain_ci": [gain_t.low, gain_t.high],
        "student_gain": gain_s.estimate, "student_gain_ci": [gain_s.low, gain_s.high],
        "ratio": float(gain_s.estimate / gain_t.estimate), "ratio_ci": [jack.low, jack.high],
        "ratio_ci_bootstrap": [float(low[0]), float(high[0])],
        "difference": diff.estimate, "difference_ci": [diff.low, diff.high],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", nargs="+", required=True, help="runs trained on the teacher reward (evaluated)")
    parser.add_argument("--student", nargs="+", required=True,
                        help="runs trained on the surrogate reward (evaluated), paired with --teacher by position")
    parser.add_argument("--statistic", default="broca_minus_global", help="a per-completion key of eval_completions")
    parser.add_argument("--bootstrap", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if len(args.teacher) != len(args.student):
        raise SystemExit(f"{len(args.teacher)} teacher runs for {len(args.student)} student runs: give them in pairs "
                         "(same seed, run side by side).")
    teacher = [gains_by_prompt(Path(run), args.statistic) for run in args.teacher]
    student = [gains_by_prompt(Path(run), args.statistic) for run in args.student]
    result: dict[str, Any] = {"statistic": args.statistic, "teacher_runs": args.teacher, "student_runs": args.student,
                              **compare(teacher, student, n_boot=args.bootstrap, seed=args.seed)}
    pairs = []
    for t_run, s_run, t, s in zip(args.teacher, args.student, teacher, student):
        pair = compare([t], [s], n_boot=args.bootstrap, seed=args.seed)
        times_t, times_s = stage_times(Path(t_run)), stage_times(Path(s_run))
        if times_t and times_s:
            pair["stage_s"] = {"teacher": times_t, "student": times_s,
                               "student_over_teacher": {stage: times_s[stage] / times_t[stage] if times_t[stage] else None
                                                        for stage in STAGES}}
        pairs.append({"teacher": t_run, "student": s_run, **pair})
    result["pairs"] = pairs
    result["intervals"] = {"gains_and_difference": "cluster-robust t over prompts (brainrl.report.stats.cluster_interval)",
                           "ratio": "delete-one-prompt jackknife t on the log scale (brainrl.report.stats."
                                    "jackknife_interval); ratio_ci_bootstrap: expanded percentile prompt bootstrap",
                           "bootstrap": {"n": args.bootstrap, "seed": args.seed}, "level": 0.95,
                           "covers": "held-out prompt sampling; training-seed spread shows in the per-pair ratios"}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
