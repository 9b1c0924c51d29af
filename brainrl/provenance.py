"""Versions, seeds and content hashes recorded with every run, cache entry and saved model."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from typing import Any, Iterable

DEFAULT_PACKAGES = ("brainrl", "torch", "numpy", "transformers", "peft", "trl", "accelerate", "nilearn")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages that change results, plus Python's."""
    out = {"python": platform.python_version()}
    out.update({name: package_version(name) for name in packages})
    return out


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for results: numpy/torch scalars and arrays as numbers and lists, the
    rest (paths, enums) as strings."""
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return obj.tolist()
    return str(obj)


def stable_json(obj: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace) so equal content hashes equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def content_hash(obj: Any, length: int = 32) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (a dict, list or string), hex, truncated."""
    data = obj if isinstance(obj, str) else stable_json(obj)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:length]
