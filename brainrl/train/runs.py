"""Run folders: metrics and completions as JSONL, trackers, run cards and checkpoints.

Layout of ``output_dir``::

    run_card.json          recipe, versions, seeds, reward definitions, brain pipeline, sampling
    metrics.jsonl          one line per step
    completions.jsonl      sampled completions with their rewards, per step
    checkpoint-000010/     adapter/, optimizer.pt, scheduler.pt, rng.pt, state.json
    adapter/               the final LoRA adapter (save_pretrained)
    eval.json              held-out evaluation (brainrl evaluate)
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from brainrl.provenance import json_default, versions
from brainrl.rewards import BrainReward, describe_reward, load_rewards
from brainrl.rewards.loading import RewardConfig
from brainrl.train.config import RecipeConfig
from brainrl.train.records import JsonlWriter, read_jsonl  # noqa: F401 (re-exported: run folders hold JSONL records)
from brainrl.train.recipe import recipe_from_dict

log = logging.getLogger(__name__)

RUN_CARD = "run_card.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
VERSION_PACKAGES = ("brainrl", "torch", "numpy", "transformers", "peft", "trl", "accelerate", "nilearn", "tokenizers",
                    "gguf", "datasets")


def build_rewards(recipe: RecipeConfig, pipeline: Any = None) -> tuple[list[Callable], list[float]]:
    """The recipe's reward callables, each brain reward bound to ``pipeline`` (default: the recipe's
    ``brain`` pipeline)."""
    specs = [RewardConfig(path=str(recipe.resolve(s.path)), weight=s.weight, kwargs=s.kwargs, name=s.name)
             for s in recipe.rewards]
    funcs, weights = load_rewards(specs, recipe.brain if pipeline is None else pipeline)
    names = [getattr(f, "__name__", "") for f in funcs]
    if len(set(names)) != len(names):
        raise ValueError(f"Reward names must be unique (they are metric keys); got {names}. "
                         "Give one a `name:` in the recipe.")
    return funcs, weights


def describe_pipeline(recipe: RecipeConfig, funcs: Sequence[Callable]) -> dict[str, Any]:
    """The brain pipeline behind the rewards (speech engine, model identity), for the run card."""
    for fn in funcs:
        candidates = [fn] + list(getattr(fn, "parts", []))
        for part in candidates:
            if isinstance(part, BrainReward):
                try:
                    return part.pipeline.describe()
                except Exception as err:  # describe must not stop a run; the reason is recorded
                    return {"pipeline": asdict(recipe.brain), "describe_failed": f"{type(err).__name__}: {err}"}
    return {"pipeline": asdict(recipe.brain), "used_by_rewards": False}


def write_run_card(output_dir: Path, recipe: RecipeConfig, funcs: Sequence[Callable], weights: Sequence[float],
                   extra: dict[str, Any]) -> dict[str, Any]:
    card = {
        "name": recipe.name,
        "trainer": recipe.trainer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "recipe_path": recipe.source_path,
        "recipe": recipe.to_dict(),
        "versions": versions(VERSION_PACKAGES),
        "seeds": {"seed": recipe.seed, "eval_seed": recipe.eval.seed},
        "rewards": [{**describe_reward(f), "weight": w} for f, w in zip(funcs, weights)],
        "brain_pipeline": describe_pipeline(recipe, funcs),
        "sampling": asdict(recipe.sampling),
        **extra,
    }
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(output_dir) / (RUN_CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=json_default, ensure_ascii=False))
    os.replace(tmp, Path(output_dir) / RUN_CARD)
    return card


def update_run_card(output_dir: Path, **fields: Any) -> None:
    path = Path(output_dir) / RUN_CARD
    card = read_run_card(output_dir)
    card.update(fields)
    path.write_text(json.dumps(card, indent=2, default=json_default, ensure_ascii=False))


def write_model_card(adapter_dir: Path, output_dir: Path) -> Path:
    """Replace PEFT's template README (sections of "More Information Needed") in ``adapter_dir`` with a
    card saying what the adapter is, from the run card: base model, trainer, rewards, steps, seeds, versions."""
    card = json.loads((Path(output_dir) / RUN_CARD).read_text(encoding="utf-8"))
    recipe = card.get("recipe", {})
    policy = card.get("policy", {})
    base = policy.get("spec") or recipe.get("policy", {}).get("model", "unknown")
    trainer = card.get("trainer", recipe.get("trainer", "?"))
    steps = (card.get("summary") or {}).get("steps") or recipe.get(trainer, {}).get("steps")
    rewards = "\n".join(f"- `{r.get('name')}` ({r.get('type')}, weight {r.get('weight')})" for r in card.get("rewards", []))
    brain = card.get("brain_pipeline", {})
    brain_model = (brain.get("model") or {}).get("model") if isinstance(brain.get("model"), dict) else brain.get("model")
    versions_line = ", ".join(f"{k} {v}" for k, v in (card.get("versions") or {}).items() if v)
    hub_base = base if "/" in str(base) and not Path(str(base)).exists() else None
    text = (
        "---\n" + (f"base_model: {hub_base}\n" if hub_base else "") + "library_name: peft\n"
        f"tags: [brainrl, lora, {trainer}]\n---\n\n"
        f"# {card.get('name', 'brainrl run')}: a LoRA adapter tuned on brain-derived rewards\n\n"
        f"- **Base model:** `{base}` (LoRA r={policy.get('lora', {}).get('r', '?')}, "
        f"{policy.get('trainable_parameters', '?')} trainable parameters)\n"
        f"- **Trainer:** {trainer} ({'advantage-weighted SFT + KL to the base' if trainer == 'awsft' else 'GRPO through TRL'}), "
        f"{steps} steps, seed {recipe.get('seed')}\n"
        f"- **Brain model behind the rewards:** {brain_model or 'see run_card.json'}"
        + (" (the synthetic reference model: a test bed, not a model of real brains)" if brain_model == "synthetic" else "")
        + f"\n- **Rewards:**\n{rewards or '- see run_card.json'}\n"
        f"- **Recipe:** `{card.get('recipe_path')}`; everything else (sampling, versions, seeds) in `../run_card.json`\n\n"
        "## Use\n\n```python\nfrom peft import PeftModel\nfrom brainrl.policy import load_policy\n\n"
        f"model, tokenizer = load_policy({str(base)!r})\nmodel = PeftModel.from_pretrained(model, {str(adapter_dir)!r})\n```\n\n"
        f"Evaluate it: `brainrl evaluate --run {output_dir}` (held-out prompts, base vs tuned) and "
        f"`brainrl compare --run {output_dir}` (HTML report).\n\n"
        "## Limits\n\nThe policy learned what the reward's brain model rewards; read its completions next to the "
        "numbers (reward hacking is the expected failure). Judge it on held-out prompts, not on training reward.\n\n"
        f"Versions: {versions_line}\n")
    path = Path(adapter_dir) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def read_run_card(run_dir: Path) -> dict[str, Any]:
    """The one reader of ``run_card.json``."""
    path = Path(run_dir) / RUN_CARD
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass the output_dir of a `brainrl train` run.")
    return json.loads(path.read_text(encoding="utf-8"))


#: recipe fields older run cards hold that recipes no longer have (dropped when a card is read)
RETIRED_FIELDS = (("eval", "bootstrap"),)


@dataclass
class Run:
    """A run folder: its run card, the recipe it was trained from (knowing the recipe file, so relative
    paths resolve as they did in training), and the paths of what it holds."""

    dir: Path
    card: dict[str, Any]
    recipe: RecipeConfig

    @classmethod
    def open(cls, run_dir: str | Path, overrides: Sequence[str] = ()) -> "Run":
        run_dir = Path(run_dir)
        card = read_run_card(run_dir)
        data = json.loads(json.dumps(card.get("recipe") or {}))
        for section, key in RETIRED_FIELDS:
            if isinstance(data.get(section), dict):
                data[section].pop(key, None)
        recipe = recipe_from_dict(data, overrides)
        recipe.source_path = card.get("recipe_path")
        return cls(run_dir, card, recipe)

    @property
    def adapter_dir(self) -> Path:
        return self.dir / "adapter"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def eval_path(self) -> Path:
        return self.dir / "eval.json"

    @property
    def eval_completions_path(self) -> Path:
        return self.dir / "eval_completions.jsonl"

    def resolve(self, relative: str | Path) -> Path:
        """A path the recipe names: as given, beside the recipe file or its parent, else in the run folder."""
        return self.recipe.resolve(relative, self.dir)


# -- checkpoints ------------------------------------------------------------------------------------
def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    output_dir = Path(output_dir)
    if not output_dir.exists():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name))
             and (p / "state.json").exists()]
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, model, optimizer, scheduler, state: dict[str, Any],
                    keep: int = 0) -> Path:
    """Adapter + optimizer + scheduler + RNG states + step, written to a temp folder and renamed."""
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step:06d}"
    tmp = output_dir / f".tmp-checkpoint-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "adapter")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, default=json_default))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if keep > 0:
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and RNG states in place; return state.json."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise RuntimeError(f"Checkpoint {path} does not match the model's adapter: unexpected keys {unexpected[:3]}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())


# -- trackers -------------------------------------------------------------------------------------
def available_trackers(report_to: Sequence[str]) -> list[str]:
    """The requested trackers that can run here (tensorboard ships with brainrl; wandb/trackio only when
    installed). 'none' or an empty list turns tracking off."""
    import importlib.util

    out = []
    for name in report_to:
        if name in ("none", ""):
            continue
        module = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}.get(name, name)
        if importlib.util.find_spec(module) is None:
            log.warning("report_to %r asked but %s is not installed; skipping it (pip install %s)", name, module, module)
            continue
        out.append(name)
    return out


def flat_hparams(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to scalar hyper-parameters (trackers want scalars)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out
