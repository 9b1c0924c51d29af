"""Held-out evaluation of a finished run: its recipe's settings fed to the evaluation core.

Both models (tuned, and base = the adapter disabled) answer the run's held-out prompts with the same
sampling and seeds (``brainrl.evaluation.sample_pair``); every completion is scored on each of the
recipe's rewards as trained, on every ROI those rewards use (plus ``eval.rois``), and on length (brain
rewards bound to the recipe's brain pipeline, or for a surrogate to the teacher it was distilled from); each
number gets the prompt-clustered interval (``brainrl.report.stats.cluster_interval``), tuned − base
paired by prompt. KL(tuned‖base) is the exact full-vocabulary KL over the tuned completions' tokens.
Writes ``eval.json`` and ``eval_completions.jsonl`` into the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from brainrl.configs import read_prompt_rows
from brainrl.provenance import json_default
from brainrl.train import runs

log = logging.getLogger(__name__)


def prompt_table(path: str | Path) -> tuple[list[str], dict[str, list[Any]] | None]:
    """Held-out prompts (a repeated prompt counted once) and their dataset columns, one list per column
    aligned with the prompts (e.g. ``theta_target`` from a ``.jsonl`` file), handed to rewards and judges;
    None when the file has no columns."""
    prompts, rows = read_prompt_rows(path)
    first: dict[str, dict[str, Any]] = {}
    for prompt, row in zip(prompts, rows):
        first.setdefault(prompt, row)
    prompts = list(first)
    keys = list(first[prompts[0]]) if prompts else []
    return prompts, ({key: [first[p][key] for p in prompts] for key in keys} or None)


def evaluate_run(run_dir: str | Path, overrides: Sequence[str] = (), *, model=None, tokenizer=None,
                 judges: Sequence[Callable] = (), write: bool = True, progress: bool = True) -> dict[str, Any]:
    """Evaluate ``run_dir`` (a finished run) on its held-out prompts; writes ``eval.json``.

    ``judges`` are extra scorers (e.g. θ judges): ``judge(prompts, completions, **columns)`` returning one
    value per completion, or a dict of named per-completion statistics."""
    from brainrl.brain.pipeline import BrainPipeline
    from brainrl.brain.surrogate import teacher_config
    from brainrl.evaluation import default_scorers, evaluate_pair, load_pair

    run = runs.Run.open(run_dir, overrides)
    recipe, cfg = run.recipe, run.recipe.eval
    model, tokenizer, dropped = load_pair(recipe.policy.model, run.adapter_dir, dtype=recipe.policy.dtype,
                                          trust_remote_code=recipe.policy.trust_remote_code, model=model,
                                          tokenizer=tokenizer)
    prompts, prompt_columns = prompt_table(run.resolve(recipe.data.heldout))
    brain = teacher_config(recipe.brain)  # a surrogate's teacher scores held-out completions, never the student
    rewards, _ = runs.build_rewards(recipe, brain)
    scorers = default_scorers(rewards, judges=judges, extra_rois=cfg.extra_rois(), pipeline=brain)
    evaluation = evaluate_pair(model, tokenizer, prompts, scorers, sampling=cfg.sampling or recipe.sampling,
                               per_prompt=cfg.per_prompt(len(prompts)), seed=cfg.seed, batch_prompts=cfg.batch_prompts,
                               system=recipe.data.system_prompt, level=cfg.level, progress=progress,
                               prompt_columns=prompt_columns,
                               generation=recipe.policy.generation)
    record = {
        "run": str(run.dir),
        "heldout": str(run.resolve(recipe.data.heldout)),
        **evaluation.to_dict(),
        "rewards": [runs.describe_reward(fn) for fn in rewards],
        "dropped_generation_defaults": dropped,
        "brain_pipeline": BrainPipeline.shared(brain).describe(),
        "versions": runs.versions(runs.VERSION_PACKAGES),
    }
    if write:
        run.eval_path.write_text(json.dumps(record, indent=2, default=json_default, ensure_ascii=False))
        writer = runs.JsonlWriter(run.eval_completions_path)
        writer.path.unlink(missing_ok=True)
        for row in evaluation.completion_rows():
            writer.write(row)
    return record


def print_eval(record: dict[str, Any]) -> None:
    """The evaluation table (``brainrl.evaluation.output.print_table``) titled with the run."""
    from brainrl.evaluation.output import print_table

    print_table(record, title=f"Held-out evaluation: {record['run']} ({record['completions_per_model']} completions "
                              f"per model, {record['prompts']} prompts)")
