"""Student vs teacher on every training completion of runs, by blocks of steps: does agreement fall as the
policy drifts?

An audit sees one prompt group every few steps; this reads a run's whole ``completions.jsonl`` afterwards
and scores every completion with a distilled student and with the teacher recorded in its card (both
through ``ROIReward(roi, statistic)``, the product's reward path). Per block of steps it prints Pearson r,
the share of concordant within-group pairs (a group = one prompt's completions in one step, what the
group-normalised advantages compare), the mean within-group Spearman rho, and both means (a student that
falls behind a climbing policy shows as a growing gap). Items either side could not score are left out.

    python scripts/surrogate_agreement.py --student runs/surrogate_broca --runs runs/teacher12 runs/student12
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def read_completions(run: Path) -> list[dict[str, Any]]:
    path = run / "completions.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a training run writes it (logging.completions_per_step: -1).")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def agreement(student: list, teacher: list, groups: list[str]) -> dict[str, float]:
    import numpy as np

    from brainrl.brain.distill import pearson, rank_agreement

    keep = [i for i, (s, t) in enumerate(zip(student, teacher)) if s is not None and t is not None]
    s = np.array([student[i] for i in keep], float)
    t = np.array([teacher[i] for i in keep], float)
    ranks = rank_agreement(s, t, [groups[i] for i in keep])
    return {"n": len(keep), "r": pearson(s, t), "concordant": ranks["concordant_pairs"],
            "within_group_rho": ranks["within_group_spearman"], "student_mean": float(s.mean()) if len(s) else None,
            "teacher_mean": float(t.mean()) if len(t) else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="folder written by brainrl distill")
    parser.add_argument("--runs", nargs="+", required=True, help="training runs (their completions.jsonl)")
    parser.add_argument("--roi", default="broca")
    parser.add_argument("--statistic", default="minus_global")
    parser.add_argument("--block", type=int, default=4, help="steps per block (default 4)")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.brain.surrogate import teacher_config
    from brainrl.rewards import ROIReward

    student_cfg = PipelineConfig(speech="text-only", model="surrogate", model_kwargs={"path": args.student},
                                 cache_dir="", speech_chunk=0)
    student = ROIReward(args.roi, args.statistic).use_pipeline(BrainPipeline(student_cfg))
    teacher = ROIReward(args.roi, args.statistic).use_pipeline(BrainPipeline(teacher_config(student_cfg)))
    result: dict[str, Any] = {"student": args.student, "roi": args.roi, "statistic": args.statistic, "runs": {}}
    for run in args.runs:
        rows = read_completions(Path(run))
        texts = [r["completion"] for r in rows]
        s, t = list(student(None, texts)), list(teacher(None, texts))
        groups = [f"{r['step']}:{r['prompt']}" for r in rows]
        blocks = {}
        last = max(int(r["step"]) for r in rows)
        for start in range(1, last + 1, args.block):
            idx = [i for i, r in enumerate(rows) if start <= int(r["step"]) < start + args.block]
            blocks[f"{start}-{min(start + args.block - 1, last)}"] = agreement(
                [s[i] for i in idx], [t[i] for i in idx], [groups[i] for i in idx])
        result["runs"][run] = {"all": agreement(s, t, groups), "blocks": blocks}
        print(f"{run}: all {_line(result['runs'][run]['all'])}")
        for name, row in blocks.items():
            print(f"  steps {name}: {_line(row)}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


def _line(row: dict[str, Any]) -> str:
    return (f"n {row['n']}, r {row['r']:.3f}, concordant {row['concordant']:.1%}, rho {row['within_group_rho']:.3f}, "
            f"student mean {row['student_mean']:.3f}, teacher mean {row['teacher_mean']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
