"""``brainrl train --recipe X.yaml [--set k=v ...]`` and ``brainrl evaluate --run DIR``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from brainrl.train.__main__ import build_parser

    train = subparsers.add_parser("train", help="train a policy from a recipe (AWSFT or GRPO)")
    build_parser(train)
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser("evaluate", help="held-out evaluation of a finished run: base vs tuned")
    evaluate.add_argument("--run", required=True, help="the run's output_dir")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override an eval.* field, e.g. --set eval.completions_per_prompt=4")
    evaluate.add_argument("--judge", dest="judges", action="append", default=[], metavar="FILE",
                          help="a file defining `reward`/`rewards`/`make_reward` callables to score as judges "
                               "(repeatable); a judge may return one value per completion or a dict of named ones")
    evaluate.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    evaluate.set_defaults(func=_evaluate)


def _train(args: argparse.Namespace) -> int:
    from brainrl.train.__main__ import run

    return run(args)


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from brainrl.rewards import load_reward_file
    from brainrl.train.evaluate import evaluate_run, print_eval

    judges = [fn for path in args.judges for fn in load_reward_file(path)]
    print_eval(evaluate_run(args.run, overrides=args.overrides, judges=judges))
    print(f"\nresults: {args.run}/eval.json and {args.run}/eval_completions.jsonl")
    print(f"next:    brainrl compare --run {args.run}   # HTML report: maps, ROI statistics, examples")
    return 0
