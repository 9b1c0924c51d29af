"""SBI configs (campaigns, estimator) use the shared strict YAML -> dataclass loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from brainrl.configs import ConfigError, build
from brainrl.configs import load_yaml as _load_yaml

C = TypeVar("C")

__all__ = ["ConfigError", "from_dict", "load_yaml"]


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; nested dataclasses recurse, unknown keys are refused."""
    return build(cls, data, where or cls.__name__)


def load_yaml(cls: type[C], path: str | Path) -> C:
    return _load_yaml(cls, path, where=cls.__name__)
