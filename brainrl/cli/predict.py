"""`brainrl predict` (texts -> .npy maps + provenance) and `brainrl reward` (texts -> ROI rewards)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainrl.cli.common import add_pipeline_args, batches, pipeline_from_args, read_texts


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict cortical maps for texts (writes .npy + provenance)")
    p.add_argument("texts", nargs="*", help="texts to predict (or use --file)")
    p.add_argument("--file", help="a file of texts: one per line, .json list or .jsonl with 'text'")
    p.add_argument("--out", default="predictions", help="output folder (default: predictions/)")
    add_pipeline_args(p)
    p.set_defaults(func=run_predict)

    r = subparsers.add_parser("reward", help="score texts with an ROI reward")
    r.add_argument("texts", nargs="*", help="texts to score (or use --file)")
    r.add_argument("--file", help="a file of texts, as for predict")
    r.add_argument("--roi", default="broca", help="ROI preset name or spec (see `brainrl rois list`)")
    r.add_argument("--statistic", default="mean", choices=["mean", "minus_global", "minus_reference"])
    r.add_argument("--reference", action="append", default=[], help="reference ROI for minus_reference")
    r.add_argument("--minimize", action="store_true", help="negate the reward")
    r.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    add_pipeline_args(r)
    r.set_defaults(func=run_reward)


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from brainrl.brain.base import Failed

    texts = read_texts(args.texts, args.file)
    pipeline = pipeline_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for offset, batch in batches(texts, args.batch_size, "predict"):
        for j, prediction in enumerate(pipeline(batch)):
            i = offset + j
            entry = {"index": i, "text": texts[i]}
            if isinstance(prediction, Failed):
                entry["error"] = prediction.reason
                print(f"[{i}] failed: {prediction.reason}")
            else:
                np.save(out / f"{i:05d}.npy", prediction.data)
                entry.update(file=f"{i:05d}.npy", shape=list(prediction.data.shape), provenance=prediction.provenance)
                print(f"[{i}] {tuple(prediction.data.shape)} -> {out / entry['file']}")
            index.append(entry)
    (out / "predictions.json").write_text(
        json.dumps({"pipeline": pipeline.describe(), "items": index}, indent=2, default=str), encoding="utf-8"
    )
    print(f"wrote {sum('file' in e for e in index)} maps and predictions.json to {out}/")
    return 0 if all("file" in e for e in index) else 1


def run_reward(args: argparse.Namespace) -> int:
    from brainrl.rewards import ROIReward

    texts = read_texts(args.texts, args.file)
    pipeline = pipeline_from_args(args)
    reward = ROIReward(args.roi, statistic=args.statistic, reference=args.reference,
                       direction="minimize" if args.minimize else "maximize").use_pipeline(pipeline)
    failed = 0
    for offset, batch in batches(texts, args.batch_size, "reward"):
        values = reward(None, list(batch))
        for j, value in enumerate(values):
            i = offset + j
            reason = reward.last_failures.get(j)
            failed += value is None
            if args.json:
                print(json.dumps({"index": i, "reward": value, "error": reason, "name": reward.__name__}))
            else:
                shown = f"{value:+.4f}" if value is not None else f"None ({reason})"
                print(f"{reward.__name__}[{i}] = {shown}   {texts[i][:60]!r}")
    return 1 if failed else 0
