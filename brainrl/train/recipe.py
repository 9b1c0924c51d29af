"""YAML recipes → typed ``RecipeConfig``, with ``--set a.b=value`` overrides and strict validation.

Every key is checked against the dataclass fields before anything is loaded, so a typo fails at once
with the field's path and the closest valid name instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from brainrl.configs import ConfigError, apply_overrides, build, parse_override  # noqa: F401 (re-exported)
from brainrl.configs import read_prompt_rows, read_prompts  # noqa: F401 (re-exported: the trainers read prompt files through it)
from brainrl.train.config import RecipeConfig


RecipeError = ConfigError  # recipes raise the shared config error


def recipe_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> RecipeConfig:
    return build(RecipeConfig, apply_overrides(dict(data or {}), overrides), "recipe")


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Read a recipe YAML, apply overrides, validate; it remembers its file, so relative paths in it
    resolve next to it (``RecipeConfig.resolve``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Recipe {str(path)!r} not found (see the recipes/ folder).")
    data = yaml.safe_load(path.read_text()) or {}
    recipe = recipe_from_dict(data, overrides)
    recipe.source_path = str(path.resolve())
    return recipe


def resolve_path(recipe: RecipeConfig, relative: str) -> Path:
    """``recipe.resolve(relative)``."""
    return recipe.resolve(relative)
