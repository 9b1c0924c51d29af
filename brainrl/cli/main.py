"""`brainrl` command line: a thin layer over the library.

Each sub-command lives in ``brainrl/cli/<name>.py`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func``; heavy imports happen inside ``func`` so ``brainrl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Explicit list of sub-command modules (no import-time discovery).
COMMAND_MODULES = (
    "brainrl.cli.demo",  # demo
    "brainrl.cli.predict",  # predict, reward
    "brainrl.cli.rois",  # rois list|show, plot
    "brainrl.cli.train",  # train, evaluate
    "brainrl.cli.serve",  # serve
    "brainrl.cli.tribe",  # tribe parity
    "brainrl.cli.sbi",  # simulate, sbi fit|diagnose, validate
    "brainrl.cli.compare",  # compare
    "brainrl.cli.validate",  # validate, ood-fit, theta-prompts
    "brainrl.cli.distill",  # distill
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainrl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # sub-command not shipped in this build
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from brainrl.errors import run_reporting

    # user errors: one clear line, no traceback (unless --verbose)
    return run_reporting(lambda: args.func(args), f"brainrl {args.command}", args.verbose)


if __name__ == "__main__":
    sys.exit(main())
