"""Checks a run passes before the policy loads: prompt files, the evaluation ROI, the trainer settings,
every reward (loaded and called on a test batch) and, on ``--resume``, that the recipe matches the run's.

A 3B policy takes minutes to load; everything that can be wrong with a recipe is found here first and
reported in one line naming the field or file and the fix.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from brainrl.provenance import json_default
from brainrl.train import runs
from brainrl.train.config import RecipeConfig
from brainrl.train.recipe import RecipeError, read_prompt_rows, read_prompts, resolve_path

log = logging.getLogger(__name__)

#: a completion long enough for every brain reward to have speech and at least one frame
TEST_COMPLETION = "The committee, which had met in secret since the spring, approved the bridge the city had promised."

#: recipe fields a resumed run may change: they do not alter what is trained (logging, evaluation, where
#: checkpoints go and how many are kept, cache settings)
RESUME_FREE = ("name", "output_dir", "logging.", "eval.", "awsft.checkpoint_every", "awsft.keep_checkpoints",
               "grpo.checkpoint_every", "brain.cache_dir", "brain.cache_max_gb", "brain.memory_items",
               "brain.speech_kwargs.workers")


class RewardCheckError(ValueError):
    """A reward failed, or returned something unusable, on the test batch."""


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(data, list):
        out = {}
        for i, value in enumerate(data):
            out.update(_flat(value, f"{prefix.rstrip('.')}[{i}]."))
        return out or {prefix.rstrip("."): []}
    return {prefix.rstrip("."): data}


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, saved value, current value) for every field that differs and matters to training."""
    saved = _flat(json.loads(json.dumps(saved, default=json_default)))
    current = _flat(json.loads(json.dumps(current, default=json_default)))
    out = []
    for key in sorted(set(saved) | set(current)):
        if any(key == free or (free.endswith(".") and key.startswith(free)) for free in RESUME_FREE):
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        same = a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-12))
        if not same:
            out.append((key, a, b))
    return out


def check_resume(recipe: RecipeConfig) -> None:
    """Refuse to resume a run whose recipe differs from the one it was started with."""
    card_path = Path(recipe.output_dir) / runs.RUN_CARD
    if not card_path.exists():
        return  # nothing to compare with: the trainer starts from step 0 (and says so)
    saved = runs.read_run_card(recipe.output_dir).get("recipe")
    if not saved:
        return
    diffs = recipe_differences(saved, recipe.to_dict())
    if diffs:
        shown = "; ".join(f"{k}: run {a!r}, now {b!r}" for k, a, b in diffs[:4])
        more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
        raise RecipeError(f"--resume: the recipe differs from the one {recipe.output_dir} was trained with: {shown}{more}. "
                          f"Resume with the same recipe and --set values (see {card_path}), or train into a new "
                          "folder with --set output_dir=<new folder>.")


def probe_prompts(recipe: RecipeConfig, prompts: Sequence[str]) -> list[Any]:
    """Two prompts in the form the recipe's trainer passes them to rewards (text for AWSFT, chat for GRPO)."""
    chosen = list(prompts[:2]) or ["Write a sentence."]
    chosen = (chosen * 2)[:2]
    if recipe.trainer == "grpo":
        system = [{"role": "system", "content": recipe.data.system_prompt}] if recipe.data.system_prompt else []
        return [system + [{"role": "user", "content": p}] for p in chosen]
    return chosen


def check_rewards(funcs: Sequence[Callable], weights: Sequence[float], prompts: Sequence[Any],
                  completions: Sequence[Any] | None = None, columns: dict[str, list[Any]] | None = None) -> None:
    """Call every reward once on a test batch, as the trainers do; raise ``RewardCheckError`` naming the
    reward if it raises, returns the wrong number of values or a non-number, or fails on every item."""
    completions = list(completions) if completions is not None else [TEST_COMPLETION] * len(prompts)
    ids = [[1, 2, 3] for _ in completions]
    for fn, weight in zip(funcs, weights):
        name = getattr(fn, "__name__", repr(fn))
        try:
            values = fn(prompts=list(prompts), completions=list(completions), completion_ids=ids, **(columns or {}))
        except Exception as err:  # the user's code: report it, whatever it is
            message = str(err).splitlines()[0] if str(err) else ""
            raise RewardCheckError(f"Reward {name!r} raised on a test batch before training: {type(err).__name__}: "
                                   f"{message}. Fix the reward (run with --verbose for the traceback).") from err
        if values is None or not hasattr(values, "__len__") or len(values) != len(completions):
            got = "None" if values is None else (len(values) if hasattr(values, "__len__") else type(values).__name__)
            raise RewardCheckError(f"Reward {name!r} returned {got} values for {len(completions)} completions; it must "
                                   "return a list with one float (or None for a failed item) per completion.")
        bad = [v for v in values if v is not None and not isinstance(v, (int, float))]
        if bad:
            raise RewardCheckError(f"Reward {name!r} returned {type(bad[0]).__name__} {bad[0]!r}; each value must be "
                                   "a float, or None for an item that could not be scored.")
        if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            reasons = sorted(set(getattr(fn, "last_failures", {}).values()))
            why = f": {reasons[0]}" if reasons else ""
            raise RewardCheckError(f"Reward {name!r} scored None for every test completion{why}. Training would "
                                   "learn nothing; fix the reward or its brain model first.")
        log.info("reward %s ok on a test batch (weight %g): %s", name, weight,
                 ", ".join("None" if v is None else f"{float(v):.4g}" for v in values))


def check_output_dir(recipe: RecipeConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless resuming or overwriting."""
    out = Path(recipe.output_dir)
    if out.exists() and not out.is_dir():
        raise RecipeError(f"recipe.output_dir {str(out)!r} is a file; name a folder, e.g. --set output_dir=runs/my_run.")
    taken = (out / "metrics.jsonl").exists() or (out / runs.RUN_CARD).exists() or bool(runs.list_checkpoints(out))
    if taken and not (resume or overwrite):
        raise RecipeError(f"{out} already holds a run. Pass --resume to continue it, --overwrite to replace it, or "
                          "--set output_dir=<new folder>.")


def preflight(recipe: RecipeConfig, *, resume: bool = False, overwrite: bool = False, evaluate: bool = True
              ) -> tuple[list[Callable], list[float]]:
    """Everything that can be checked before the policy loads; returns the loaded reward callables and
    weights (the trainers reuse them, so a brain model loads once)."""
    check_output_dir(recipe, resume, overwrite)
    if resume:
        check_resume(recipe)
    from brainrl.policy.loading import check_policy_spec

    try:
        check_policy_spec(recipe.policy.model)
    except FileNotFoundError as err:
        raise RecipeError(f"recipe.policy.model: {err}") from err
    train_prompts, rows = read_prompt_rows(resolve_path(recipe, recipe.data.train))
    if evaluate:
        read_prompts(resolve_path(recipe, recipe.data.heldout))
        from brainrl.cortex.rois import get_roi

        named = [(f"eval.rois[{i}]", roi) for i, roi in enumerate(recipe.eval.rois)]
        for where, roi in named + ([("eval.roi", recipe.eval.roi)] if recipe.eval.roi else []):
            try:
                get_roi(roi)
            except (KeyError, ValueError) as err:
                message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
                raise RecipeError(f"recipe.{where}: {message}") from err
    funcs, weights = runs.build_rewards(recipe)
    if recipe.trainer == "grpo":
        from brainrl.train.grpo import grpo_config

        grpo_config(recipe, weights)  # TRL's own checks of the mapped settings, before any model loads
    probe = probe_prompts(recipe, train_prompts)
    probe_rows = ((rows[:2] or [{}]) * 2)[:2]
    columns = {name: [r[name] for r in probe_rows] for name in probe_rows[0]} if probe_rows[0] else None
    check_rewards(funcs, weights, probe, columns=columns)
    return funcs, weights
