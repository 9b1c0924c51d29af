"""Reward per completion: the teacher pipeline vs the distilled student, side by side in one process.

Both go through the product's reward path (``ROIReward("broca", "minus_global")`` bound to a
``PipelineConfig``): the teacher through espeak speech and the synthetic model, the student through the
``text-only`` engine and the ``surrogate`` model. Caches are off for both (disk and memory), so every
call predicts. Rounds alternate teacher and student on the same texts, so load from other jobs hits both
alike (they alternate every 16 texts); the ratio of medians is the number to quote. The student's agreement with the teacher on the
benchmark texts is printed too.

    python scripts/bench_surrogate.py --student runs/surrogate_broca
    python scripts/bench_surrogate.py --student runs/surrogate_broca --rounds 7 --out docs/bench/surrogate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_texts(student: Path, n: int) -> list[str]:
    path = student / "texts_heldout.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [r["text"] for r in rows if "text" in r and r["text"].strip()]
        if texts:
            return (texts * (n // len(texts) + 1))[:n] if n > len(texts) else texts[:n]
    raise FileNotFoundError(f"{path} not found: pass the folder `brainrl distill --out` wrote (it keeps the "
                            "held-out base-policy texts there).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, help="folder written by brainrl distill")
    parser.add_argument("--texts", type=int, default=64, help="completions per round (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating teacher/student rounds (default 5)")
    parser.add_argument("--student-repeats", type=int, default=20,
                        help="student calls per round (it is fast; repeats steady its timing)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads, for both sides (default 1)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
        os.environ.setdefault(var, str(args.threads))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.brain.surrogate import teacher_config
    from brainrl.provenance import versions
    from brainrl.rewards import ROIReward

    load_start = os.getloadavg()
    student_dir = Path(args.student)
    texts = load_texts(student_dir, args.texts)
    student_cfg = PipelineConfig(speech="text-only", model="surrogate", model_kwargs={"path": str(student_dir)},
                                 cache_dir="", memory_items=0, speech_chunk=0)  # nothing to overlap: no speech
    teacher_cfg = teacher_config(student_cfg)
    teacher_cfg = PipelineConfig(**{**vars(teacher_cfg), "cache_dir": "", "memory_items": 0})
    student = ROIReward("broca", "minus_global").use_pipeline(BrainPipeline(student_cfg))
    teacher = ROIReward("broca", "minus_global").use_pipeline(BrainPipeline(teacher_cfg))
    student(None, texts[:4]), teacher(None, texts[:4])  # load models, word tables, HRF tables

    teacher_ms, student_ms, truth, mine = [], [], [], []
    for r in range(args.rounds):
        teacher_s = student_s = 0.0
        truth, mine = [], []
        # alternate in chunks of 16 texts (well under a second each), so load from other jobs hits both alike
        for start in range(0, len(texts), 16):
            chunk = texts[start:start + 16]
            t0 = time.perf_counter()
            truth += teacher(None, chunk)
            teacher_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(args.student_repeats):
                values = student(None, chunk)
            student_s += time.perf_counter() - t0
            mine += values
        teacher_ms.append(teacher_s / len(texts) * 1e3)
        student_ms.append(student_s / (len(texts) * args.student_repeats) * 1e3)
        print(f"round {r + 1}: teacher {teacher_ms[-1]:.2f} ms/completion, student {student_ms[-1]:.4f} ms/completion",
              flush=True)
    pairs = [(s, t) for s, t in zip(mine, truth) if s is not None and t is not None]
    s, t = np.array(pairs).T
    result = {
        "teacher": {"pipeline": vars(teacher_cfg), "ms_per_completion": teacher_ms,
                    "median_ms": statistics.median(teacher_ms)},
        "student": {"pipeline": vars(student_cfg), "ms_per_completion": student_ms,
                    "median_ms": statistics.median(student_ms)},
        "speedup_of_medians": statistics.median(teacher_ms) / statistics.median(student_ms),
        "speedup_per_round": [t / s for t, s in zip(teacher_ms, student_ms)],
        "texts_per_round": len(texts), "rounds": args.rounds, "student_repeats": args.student_repeats,
        "reward": "broca minus_global", "agreement_r": float(np.corrcoef(s, t)[0, 1]),
        "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "load_average_start": load_start, "load_average": os.getloadavg(),
        "versions": versions(), "argv": sys.argv,
    }
    print(f"\nteacher {result['teacher']['median_ms']:.2f} ms vs student {result['student']['median_ms']:.4f} ms "
          f"per completion (median of {args.rounds} rounds): {result['speedup_of_medians']:.0f}x; "
          f"student-teacher r on these texts {result['agreement_r']:.3f}; load average {load_start[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
