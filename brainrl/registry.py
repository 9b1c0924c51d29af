"""A small explicit registry for pluggable parts (speech engines, brain models, generators).

Entries are registered by name with a factory or a lazy ``"module:attr"`` path, so optional
backends cost nothing until they are asked for and nothing is imported by magic.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


def closest_names(name: str, names: list[str], n: int = 3) -> list[str]:
    """Names in ``names`` closest to ``name`` (case-insensitive), best first."""
    lowered = {candidate.lower(): candidate for candidate in names}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown_name_error(kind: str, name: str, names: list[str], hint: str = "") -> KeyError:
    """A KeyError that lists the valid names and suggests the closest one."""
    close = closest_names(name, names)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(sorted(names))
    message = f"Unknown {kind} {name!r}.{suggestion} Valid {kind}s: {listing}."
    if hint:
        message += f" {hint}"
    return KeyError(message)


class Registry(Generic[T]):
    """Name -> factory. ``register`` takes a callable or a lazy ``"package.module:attr"`` string."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T] | str] = {}

    def register(self, name: str, factory: Callable[..., T] | str, *, overwrite: bool = False) -> None:
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it.")
        self._entries[name] = factory

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def factory(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self.names())
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry

    def create(self, name: str, **kwargs: Any) -> T:
        factory = self.factory(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise ``ValueError`` naming the keyword and the closest accepted one when ``factory`` (a class or a
    function without ``**kwargs``) does not take a keyword in ``kwargs``."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    for key in kwargs:
        if key not in accepted:
            close = closest_names(key, accepted)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{what} takes no argument {key!r}.{hint} Valid arguments: {', '.join(accepted) or 'none'}.")
