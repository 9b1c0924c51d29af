"""Typed configs from YAML: mappings -> dataclasses, with strict validation and dotted overrides.

Every key is checked against the dataclass fields before anything runs, so a typo fails at once with the
field's path and the closest valid name instead of being ignored. Recipes (brainrl.train), campaign and
estimator configs (brainrl.sbi) all go through here, and so do the files configs name: ``locate`` (the
one path resolver) and ``read_prompts`` (the one prompt-file reader).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union

import yaml

from brainrl.registry import closest_names

C = TypeVar("C")


class ConfigError(ValueError):
    """A config field is unknown, has the wrong type or an invalid value."""


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
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}.")
    if origin is Literal:
        if value not in args:
            close = closest_names(str(value), [str(a) for a in args])
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}.{hint}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}.")
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}.")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}.")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}.")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}.")
        if not math.isfinite(value):  # NaN compares False with every bound, so no later check would catch it
            raise ConfigError(f"{where}: expected a finite number, got {value!r}.")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}.")
        return value
    return value


def check_range(where: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, fix: str = "") -> None:
    """Raise ``ValueError`` naming ``where`` unless ``value`` is a finite number within the bounds
    (``low_open``/``high_open`` exclude that bound); ``fix`` says what to do instead."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    raise ValueError(f"{where} must be {' and '.join(bounds) or 'a finite number'}; got {value!r}."
                     + (f" {fix}" if fix else ""))


def check_field(key: str, names: Sequence[str], where: str, owner: str | None = None) -> None:
    """Raise ``ConfigError`` naming ``where.key`` and the closest valid name when ``key`` is not in ``names``."""
    if key in names:
        return
    close = closest_names(str(key), list(names))
    hint = f" Did you mean {close[0]!r}?" if close else ""
    valid = (f"Valid fields of {owner or where}: {', '.join(names)}." if len(names) <= 40
             else f"See the fields of {owner or where}.")
    raise ConfigError(f"Unknown field {where}.{key}.{hint} {valid}")


def build(cls: type, data: Any, where: str = "config") -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {type(data).__name__} {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        check_field(key, names, where)
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (ValueError, KeyError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        parts = where.split(".")
        for i in range(len(parts)):  # the message already names the field (``lora.alpha ...``): full path once
            if message.startswith(".".join(parts[i:]) + "."):
                raise ConfigError(".".join(parts[:i] + [message])) from err
        raise ConfigError(f"{where}: {message}") from err


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"awsft.steps=10"`` → (["awsft", "steps"], 10); the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"Override {item!r} must look like section.field=value, e.g. awsft.steps=10.")
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
                raise ConfigError(f"Override {item!r}: {part!r} is not a section.")
        if isinstance(node, list):
            node[int(path[-1])] = value
        else:
            node[path[-1]] = value
    return data


def load_yaml(cls: type[C], path: str | Path, overrides: Sequence[str] = (), where: str = "config") -> C:
    """Read a YAML mapping, apply ``section.field=value`` overrides, build ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {str(path)!r} not found.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of fields at the top level.")
    return build(cls, apply_overrides(data, overrides), where)


def locate(relative: str | Path, bases: Sequence[str | Path] = ()) -> Path:
    """The one resolver of a path named in a config: as given (absolute, or relative to the working
    directory) when it exists, else the first of ``bases`` that holds it, else as given (so the caller's
    "not found" error names the path the user wrote)."""
    candidate = Path(relative).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for base in bases:
        if (Path(base) / candidate).exists():
            return Path(base) / candidate
    return candidate


def read_prompts(path: str | Path) -> list[str]:
    """A prompt file: one prompt per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {str(path)!r} not found; a prompt file holds one prompt per line "
                                "(recipe data.train / data.heldout, or --prompts FILE).")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"Prompt file {path} has no prompts (one per line; # starts a comment).")
    return prompts


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file; a line that is not a JSON object
    raises a ValueError naming ``path:line``."""
    import json

    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not JSON: {err}") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number} is not a JSON object (one object per line).")
        rows.append((number, row))
    return rows


def read_prompt_rows(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Prompts and their extra dataset columns. A ``.jsonl`` file holds one object per line with a
    ``prompt`` and any columns the rewards read (e.g. ``theta_target``, ``topic`` from
    ``brainrl theta-prompts``); the trainers pass those columns to the rewards (TRL's dataset columns,
    AWSFT the same). Any other file is ``read_prompts`` (no columns)."""
    path = Path(path)
    if path.suffix != ".jsonl":
        prompts = read_prompts(path)
        return prompts, [{} for _ in prompts]
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {str(path)!r} not found; a .jsonl prompt file holds one JSON object "
                                "per line with a 'prompt' (recipe data.train / data.heldout).")
    prompts, columns = [], []
    for number, row in read_jsonl(path):
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ValueError(f"{path}:{number} needs a non-empty string 'prompt' field.")
        prompts.append(row.pop("prompt").strip())
        columns.append(row)
    if not prompts:
        raise ValueError(f"Prompt file {path} has no prompts.")
    if len({tuple(sorted(c)) for c in columns}) > 1:
        raise ValueError(f"{path}: every row needs the same columns (a dataset column per field).")
    return prompts, columns
