"""`brainrl demo`: the README's main job on the embedded offline defaults.

1. predicts maps and left-Broca rewards for a few example completions (speech -> synthetic model);
2. tunes SmolLM2-135M-Instruct on Broca selectivity with AWSFT (``recipes/offline_broca.yaml``);
3. evaluates base vs tuned on held-out prompts (means and medians with 95% CIs, KL to base).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXAMPLES = [
    "The cat sat on the mat.",
    "The committee, which had met in secret since the spring, announced that although the budget was "
    "approved, the bridge that the city had promised would wait until the survey was complete.",
    "Rain is expected tomorrow, so bring an umbrella.",
    "",
]
DEFAULT_RECIPE = "recipes/offline_broca.yaml"


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the offline demo: example rewards, then train + held-out evaluation")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe to train (default {DEFAULT_RECIPE})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set awsft.steps=4")
    p.add_argument("--examples-only", action="store_true", help="only print the example maps and rewards")
    p.add_argument("--overwrite", action="store_true", help="train again even if the run folder exists")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: every core, with OpenMP's passive wait policy)")
    p.set_defaults(func=run_demo)


def cpu_threads(requested: int | None) -> tuple[int, str]:
    """Torch CPU threads for the demo, and why. Call before torch is first imported.

    OpenMP's default (active) waiting spins idle threads; on a 2-core box shared with other work two torch
    threads then ran 5.6x slower than one (631 vs 113 s per training step, load average ~12). With
    ``OMP_WAIT_POLICY=PASSIVE`` (read once, when torch loads its OpenMP runtime) two threads beat one even
    under that load (73-75 vs 100-102 s per step, load ~17), so the demo sets it and uses every core;
    if torch was imported before with another policy, it falls back to one thread."""
    fresh = "torch" not in sys.modules
    if fresh:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    passive = fresh and os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    if requested:
        return requested, "--threads"
    if passive:
        return os.cpu_count() or 1, "every core, OMP_WAIT_POLICY=PASSIVE"
    return 1, f"OpenMP wait policy is {os.environ.get('OMP_WAIT_POLICY', 'active (default)')}: one thread"


def _recipe_path(path: str) -> Path:
    candidate = Path(path)
    if candidate.exists():
        return candidate
    repo_copy = Path(__file__).resolve().parents[2] / path  # an editable install run from elsewhere
    if repo_copy.exists():
        return repo_copy
    raise FileNotFoundError(f"Recipe {path!r} not found; run from the brainrl checkout or pass --recipe PATH.")


def print_examples() -> None:
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.rewards import ROIReward

    pipeline = BrainPipeline.shared(PipelineConfig())
    mean = ROIReward("broca", "mean").use_pipeline(pipeline)
    selectivity = ROIReward("broca", "minus_global").use_pipeline(pipeline)
    maps = pipeline(EXAMPLES)
    means, selectivities = mean(None, EXAMPLES), selectivity(None, EXAMPLES)
    print(f"brain model: {pipeline.model.identity()['model']} (synthetic stand-in, not a model of real brains); "
          f"speech: {pipeline.speech.describe()['speech_engine_version']}")
    print(f"{'map shape (T, V)':>17}  {'broca mean':>10}  {'broca-global':>12}  completion")
    for text, prediction, m, s in zip(EXAMPLES, maps, means, selectivities):
        shape = str(tuple(prediction.data.shape)) if prediction else f"failed: {prediction.reason[:30]}"
        fmt = lambda v: f"{v:+.3f}" if v is not None else "None"  # noqa: E731
        print(f"{shape:>17}  {fmt(m):>10}  {fmt(s):>12}  {text[:70]!r}")


def run_demo(args: argparse.Namespace) -> int:
    threads, why = cpu_threads(args.threads)
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads)
        print(f"torch CPU threads: {threads} ({why})")
    print_examples()
    if args.examples_only:
        return 0
    from brainrl.train import load_recipe, run_recipe

    recipe = load_recipe(_recipe_path(args.recipe), args.overrides)
    done = (Path(recipe.output_dir) / "adapter" / "adapter_config.json").exists()
    if done and not args.overwrite:
        print(f"\n{recipe.output_dir} already holds a trained adapter: evaluating it (use --overwrite to retrain)")
        from brainrl.train.evaluate import evaluate_run, print_eval

        print_eval(evaluate_run(recipe.output_dir))
    else:
        run_recipe(recipe, overwrite=args.overwrite or Path(recipe.output_dir).exists())
    print(f"\nNext: `brainrl compare --run {recipe.output_dir}` writes the HTML report (maps, ROI statistics).")
    return 0
