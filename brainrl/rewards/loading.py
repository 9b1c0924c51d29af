"""Load rewards that recipes name by a path into the top-level ``rewards/`` folder.

A reward file is a small Python file a user copies and edits. It defines one of:
``reward`` (a callable), ``rewards`` (a list of callables), or ``make_reward(**kwargs)`` (a factory, used
when the recipe passes keyword arguments).

Precedence when a file defines several: with recipe ``kwargs``, ``make_reward(**kwargs)`` is used (and
must exist); without kwargs, ``rewards`` wins over ``reward``, which wins over ``make_reward()``.

A missing file is a ``FileNotFoundError``; every other failure while loading (an exception on import, a keyword ``make_reward`` does not
take, a non-callable) is a ``RewardLoadError``: one line naming the file, the cause and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from brainrl.brain.pipeline import PipelineConfig
from brainrl.registry import closest_names
from brainrl.rewards.base import Reward


class RewardLoadError(ValueError):
    """A reward file could not be loaded or its reward could not be built (one line: file, cause, fix)."""


def _where_in(path: Path, err: BaseException) -> str:
    """``" (line N)"`` of the deepest frame of ``err`` inside ``path`` (the user's own line), else ''."""
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    if line is None and isinstance(err, SyntaxError) and err.lineno:
        line = err.lineno
    return f" (line {line})" if line else ""


@dataclass
class RewardConfig:
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
    except Exception as err:
        del sys.modules[module_name]
        message = str(err).splitlines()[0] if str(err) else ""
        raise RewardLoadError(f"Reward file {path} failed to import{_where_in(path, err)}: {type(err).__name__}: "
                              f"{message}. Fix the file (try it with `brainrl reward --reward-file {path} TEXT`).") from err
    return module


def _make(path: Path, factory: Callable, kwargs: dict[str, Any]) -> list[Callable]:
    """Call ``make_reward(**kwargs)``, turning a keyword it does not take or an exception into one line."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        accepted = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in kwargs:
            if key not in accepted:
                close = closest_names(key, accepted)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise RewardLoadError(f"{path}: make_reward() takes no keyword {key!r}.{hint} It takes: "
                                      f"{', '.join(accepted) or 'no keywords'}; fix `kwargs:` of this reward in the recipe.")
    try:
        made = factory(**kwargs)
    except Exception as err:
        message = str(err).splitlines()[0] if str(err) else ""
        raise RewardLoadError(f"{path}: make_reward({', '.join(f'{k}=...' for k in kwargs)}) failed"
                              f"{_where_in(path, err)}: {type(err).__name__}: {message}. Check the reward's "
                              "`kwargs:` in the recipe.") from err
    return list(made) if isinstance(made, (list, tuple)) else [made]


def load_reward_file(path: str | Path, base_dir: str | Path | None = None, **kwargs: Any) -> list[Callable]:
    """The reward callables defined in a reward file (see the module docstring)."""
    path = Path(path)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = Path(base_dir) / path
    if not path.is_file():
        raise FileNotFoundError(
            f"Reward file {str(path)!r} not found. Reward paths are relative to the working directory "
            "or the recipe's folder, e.g. 'rewards/broca.py'."
        )
    module = _import_file(path)
    if kwargs:
        if not hasattr(module, "make_reward"):
            raise RewardLoadError(f"{path} gets kwargs {sorted(kwargs)} from the recipe but defines no "
                                  "make_reward(**kwargs); remove `kwargs:` or add the factory.")
        found = _make(path, module.make_reward, kwargs)
    elif hasattr(module, "rewards"):
        found = list(module.rewards)
    elif hasattr(module, "reward"):
        found = [module.reward]
    elif hasattr(module, "make_reward"):
        found = _make(path, module.make_reward, {})
    else:
        raise RewardLoadError(f"{path} defines none of `reward`, `rewards` or `make_reward(**kwargs)`.")
    for fn in found:
        if not callable(fn):
            raise RewardLoadError(f"{path}: {fn!r} is not callable; a reward is called as "
                                  "fn(prompts, completions, **columns).")
    return found


def load_rewards(specs: Sequence[RewardConfig | dict], pipeline: PipelineConfig | None = None,
                 base_dir: str | Path | None = None) -> tuple[list[Callable], list[float]]:
    """Reward callables and their weights for a recipe, each brain reward bound to ``pipeline``."""
    funcs: list[Callable] = []
    weights: list[float] = []
    for spec in specs:
        spec = spec if isinstance(spec, RewardConfig) else RewardConfig(**spec)
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
