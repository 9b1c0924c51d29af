"""`brainrl predict` (texts -> .npy maps + provenance) and `brainrl reward` (texts -> ROI rewards)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brainrl.cli.common import (TEXT_FILE_HELP, add_pipeline_args, batches, folder_arg, parse_key_values,
                                pipeline_config_from_args, pipeline_from_args, read_texts)


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict cortical maps for texts (writes .npy + provenance)")
    p.add_argument("texts", nargs="*", help="texts to predict (or use --file)")
    p.add_argument("--file", help=TEXT_FILE_HELP)
    p.add_argument("--out", type=folder_arg, default="predictions", help="output folder (default: predictions/)")
    add_pipeline_args(p)
    p.set_defaults(func=run_predict)

    r = subparsers.add_parser("reward", help="score texts with an ROI reward, or with a reward file (--reward-file)")
    r.add_argument("texts", nargs="*", help="texts to score (or use --file)")
    r.add_argument("--file", help=TEXT_FILE_HELP)
    r.add_argument("--reward-file", help="score with the reward(s) of a reward file, as a recipe would "
                                         "(e.g. rewards/broca_vs_auditory.py); --roi/--statistic are then unused")
    r.add_argument("--reward-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword for the reward file's make_reward(**kwargs) (repeatable)")
    r.add_argument("--prompt", default=None, help="the prompt passed to the reward with every text (default none)")
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
    written = sum('file' in e for e in index)
    print(f"wrote {written} maps and predictions.json to {out}/")
    if written:
        first = next(e["file"] for e in index if "file" in e)
        print(f"next: brainrl plot --map {out / first} --out {out / Path(first).with_suffix('.png').name}")
    return 0 if all("file" in e for e in index) else 1


def _rewards_from_args(args: argparse.Namespace) -> list:
    """The ROI reward of --roi/--statistic, or the rewards of --reward-file bound to the pipeline flags
    (exactly as a recipe binds them to its ``brain:`` section)."""
    from brainrl.rewards import ROIReward, load_reward_file
    from brainrl.rewards.base import Reward

    if not args.reward_file:
        return [ROIReward(args.roi, statistic=args.statistic, reference=args.reference,
                          direction="minimize" if args.minimize else "maximize").use_pipeline(pipeline_from_args(args))]
    config = pipeline_config_from_args(args)
    funcs = load_reward_file(args.reward_file, **parse_key_values(args.reward_arg))
    return [fn.bind(config) if isinstance(fn, Reward) else fn for fn in funcs]


def run_reward(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.file)
    rewards = _rewards_from_args(args)
    failed = 0
    for offset, batch in batches(texts, args.batch_size, "reward"):
        for reward in rewards:
            name = getattr(reward, "__name__", type(reward).__name__)
            prompts = [args.prompt] * len(batch) if args.prompt is not None else None
            values = reward(prompts=prompts, completions=list(batch))
            for j, value in enumerate(values):
                i = offset + j
                reason = getattr(reward, "last_failures", {}).get(j)
                failed += value is None
                if args.json:
                    print(json.dumps({"index": i, "reward": value, "error": reason, "name": name}))
                else:
                    shown = f"{value:+.4f}" if value is not None else f"None ({reason})"
                    print(f"{name}[{i}] = {shown}   {texts[i][:60]!r}")
    if not args.json:
        print(f"scored {len(texts)} text(s) with {len(rewards)} reward(s); {failed} None (reasons shown). Rewards "
              "are in the units of the brain model's predicted response (a.u.); see docs/training.md#reward-scale.")
    return 1 if failed else 0
