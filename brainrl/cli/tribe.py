"""`brainrl tribe parity`: measure how far brainrl's fast TRIBE settings move maps and rewards (docs/tribe.md)."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)

COMPARISONS = ("bf16", "one-pass", "pipeline")


def register(subparsers) -> None:
    p = subparsers.add_parser("tribe", help="TRIBE v2 tools: parity of the fast path against TRIBE's own")
    sub = p.add_subparsers(dest="tribe_command", metavar="TRIBE_COMMAND")
    q = sub.add_parser("parity", help="fast vs reference settings: per-TR vertex r, ROI-reward r, rank agreement")
    q.add_argument("--texts", default=None, help="a text file, one text per line (e.g. completions of your policy)")
    q.add_argument("--n", type=int, default=None, help="use the first N texts (default all)")
    q.add_argument("--compare", action="append", choices=COMPARISONS, default=None,
                   help="comparison to run (repeatable; default bf16 and one-pass; 'pipeline' needs network: "
                        "gTTS + WhisperX, the online extra)")
    q.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="TribeBrainModel argument for both sides, e.g. worker=true, python=.venv-tribe/bin/python, "
                        "device=cuda, checkpoint_dir=DIR (repeatable)")
    q.add_argument("--roi", action="append", default=None, help="ROI for the reward metrics (repeatable; default "
                                                                "broca, wernicke, auditory, stg, v1, language_left)")
    q.add_argument("--batch-size", type=int, default=8, help="texts per predict call and per rank-agreement batch")
    q.add_argument("--out", default="tribe-parity", help="folder for parity.json and parity.png")
    q.set_defaults(func=run_parity_command)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _read_texts(path: str | None, n: int | None) -> list[str]:
    from pathlib import Path

    if path is None:
        raise ValueError("brainrl tribe parity needs --texts FILE (one text per line, e.g. completions of your policy).")
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:n] if n else texts


def run_parity_command(args: argparse.Namespace) -> int:
    from brainrl.brain.tribe.parity import DEFAULT_ROIS, run_parity, write_report
    from brainrl.cli.common import parse_key_values

    if args.batch_size < 3:
        raise ValueError(f"--batch-size must be at least 3 (rank agreement within a batch); got {args.batch_size}.")
    texts = _read_texts(args.texts, args.n)
    comparisons = args.compare or ["bf16", "one-pass"]
    report = run_parity(texts, comparisons, parse_key_values(args.model_arg), rois=args.roi or DEFAULT_ROIS,
                        batch_size=args.batch_size, speech_dir=None)
    path, png = write_report(report, args.out)
    for name, result in report["comparisons"].items():
        summary = {k: result.get(k) for k in ("n_compared", "failed", "per_tr_vertex_r", "roi_reward_r",
                                              "rank_r_within_batch_mean")}
        print(f"{name}: {result.get('candidate')} vs {result.get('baseline')}")
        print(json.dumps(summary, indent=2))
    print(f"wrote {path} and {png}")
    return 0
