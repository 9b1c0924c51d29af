"""``python -m brainrl.train --recipe X.yaml`` (also under ``accelerate launch -m brainrl.train``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m brainrl.train", description=__doc__)
    parser.add_argument("--recipe", required=True, help="recipe YAML, e.g. recipes/offline_broca.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set awsft.steps=10 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation after training")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 on a shared box)")
    # SUPPRESS: under `brainrl train` the top-level -v/--verbose keeps its value when this one is not given
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging and full tracebacks")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from brainrl.train import load_recipe, run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    result = run_recipe(recipe, resume=args.resume, overwrite=args.overwrite,
                        evaluate=False if args.no_eval else None)
    from accelerate import PartialState

    if PartialState().is_main_process:
        out = recipe.output_dir
        written = "adapter/, metrics.jsonl, completions.jsonl, run_card.json" + (", eval.json" if result["eval"] else "")
        print(f"\nresults: {out}/ ({written})")
        print(f"next:    brainrl compare --run {out}   # HTML report: maps, ROI statistics, examples"
              + ("" if result["eval"] else f"\n         brainrl evaluate --run {out}   # held-out base vs tuned"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from brainrl.errors import run_reporting

    return run_reporting(lambda: run(args), "brainrl.train", verbose)


if __name__ == "__main__":
    sys.exit(main())
