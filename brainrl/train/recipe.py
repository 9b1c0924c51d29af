"""YAML recipes → typed ``RecipeConfig``, with ``--set a.b=value`` overrides and strict validation.

Every key is checked against the dataclass fields before anything is loaded, so a typo fails at once
with the field's path and the closest valid name instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from brainrl.configs import ConfigError, apply_overrides, build, parse_override  # noqa: F401 (re-exported)
from brainrl.train.config import RecipeConfig


RecipeError = ConfigError  # recipes raise the shared config error


def recipe_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> RecipeConfig:
    return build(RecipeConfig, apply_overrides(dict(data or {}), overrides), "recipe")


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
