"""YAML recipes → typed ``RecipeConfig``, with ``--set a.b=value`` overrides and strict validation.

Every key is checked against the dataclass fields before anything is loaded, so a typo fails at once
with the field's path and the closest valid name instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import yaml

from brainrl.registry import closest_names
from brainrl.train.config import RecipeConfig


class RecipeError(ValueError):
    """A recipe field is unknown, has the wrong type or an invalid value."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and build nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except RecipeError as err:
                errors.append(str(err))
        raise RecipeError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}.")
    if origin is Literal:
        if value not in args:
            close = closest_names(str(value), [str(a) for a in args])
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}.{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__} {value!r}.")
        item = args[0] if args else Any
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}.")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {type(value).__name__} {value!r}.")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {type(value).__name__} {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {type(value).__name__} {value!r}.")
        return value
    return value


def build(cls: type, data: Any, where: str = "recipe") -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of fields, got {type(data).__name__} {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = closest_names(str(key), names)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"Unknown field {where}.{key}.{hint} Valid fields of {where}: {', '.join(names)}.")
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (ValueError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise RecipeError(f"{where}: {message}") from err


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"awsft.steps=10"`` → (["awsft", "steps"], 10); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"Override {item!r} must look like section.field=value, e.g. awsft.steps=10.")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys in the raw recipe mapping (validation happens when it is built)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
                continue
            node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"Override {item!r}: {part!r} is not a section.")
        if isinstance(node, list):
            node[int(path[-1])] = value
        else:
            node[path[-1]] = value
    return data


def recipe_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> RecipeConfig:
    return build(RecipeConfig, apply_overrides(dict(data or {}), overrides))


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Read a recipe YAML, apply overrides, validate; relative paths are resolved later by ``resolve_path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Recipe {str(path)!r} not found (see the recipes/ folder).")
    data = yaml.safe_load(path.read_text()) or {}
    recipe = recipe_from_dict(data, overrides)
    recipe.__dict__["source_path"] = str(path.resolve())
    return recipe


def resolve_path(recipe: RecipeConfig, relative: str) -> Path:
    """A path from a recipe: as given (cwd), else next to the recipe file, else in the recipe's parent
    folder (so ``recipes/x.yaml`` can name ``rewards/broca.py`` from anywhere)."""
    candidate = Path(relative).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    source = recipe.__dict__.get("source_path")
    if source:
        for base in (Path(source).parent, Path(source).parent.parent):
            if (base / candidate).exists():
                return base / candidate
    return candidate


def read_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and ``#`` comments are skipped."""
    if not Path(path).exists():
        raise FileNotFoundError(f"Prompt file {str(path)!r} not found (data.train / data.heldout in the recipe).")
    prompts = [line.strip() for line in Path(path).read_text().splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"Prompt file {path} has no prompts.")
    return prompts
