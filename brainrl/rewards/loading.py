"""Load rewards that recipes name by a path into the top-level ``rewards/`` folder.

A reward file is a small Python file a user copies and edits. It defines one of:
``reward`` (a callable), ``rewards`` (a list of callables), or ``make_reward(**kwargs)`` (a factory, used
when the recipe passes keyword arguments).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from brainrl.brain.pipeline import PipelineConfig
from brainrl.rewards.base import Reward


@dataclass
class RewardSpec:
    """One reward entry of a recipe: ``{path: rewards/broca.py, weight: 1.0, kwargs: {...}}``."""

    path: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


def _import_file(path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"brainrl_user_rewards.{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"Cannot import reward file {path}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


def load_reward_file(path: str | Path, base_dir: str | Path | None = None, **kwargs: Any) -> list[Callable]:
    """The reward callables defined in a reward file (see the module docstring)."""
    path = Path(path)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = Path(base_dir) / path
    if not path.exists():
        raise FileNotFoundError(
            f"Reward file {str(path)!r} not found. Reward paths are relative to the working directory "
            "or the recipe's folder, e.g. 'rewards/broca.py'."
        )
    module = _import_file(path)
    if kwargs:
        if not hasattr(module, "make_reward"):
            raise ValueError(f"{path} gets kwargs {sorted(kwargs)} from the recipe but defines no make_reward(**kwargs).")
        made = module.make_reward(**kwargs)
        found = list(made) if isinstance(made, (list, tuple)) else [made]
    elif hasattr(module, "rewards"):
        found = list(module.rewards)
    elif hasattr(module, "reward"):
        found = [module.reward]
    elif hasattr(module, "make_reward"):
        made = module.make_reward()
        found = list(made) if isinstance(made, (list, tuple)) else [made]
    else:
        raise ValueError(f"{path} defines none of `reward`, `rewards` or `make_reward(**kwargs)`.")
    for fn in found:
        if not callable(fn):
            raise ValueError(f"{path}: {fn!r} is not callable; a reward is called as fn(prompts, completions, **columns).")
    return found


def load_rewards(specs: Sequence[RewardSpec | dict], pipeline: PipelineConfig | None = None,
                 base_dir: str | Path | None = None) -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights for a recipe, each brain reward bound to ``pipeline``."""
    funcs: list[Callable] = []
    weights: list[float] = []
    for spec in specs:
        spec = spec if isinstance(spec, RewardSpec) else RewardSpec(**spec)
        for fn in load_reward_file(spec.path, base_dir, **spec.kwargs):
            if isinstance(fn, Reward) and pipeline is not None:
                fn = fn.bind(pipeline)
            if spec.name:
                fn.__name__ = spec.name
            funcs.append(fn)
            weights.append(spec.weight)
    return funcs, weights


def describe_reward(fn: Callable) -> dict[str, Any]:
    """A JSON-able description of any reward callable, for run cards."""
    if isinstance(fn, Reward):
        return fn.describe()
    return {"name": getattr(fn, "__name__", repr(fn)), "type": type(fn).__name__}
