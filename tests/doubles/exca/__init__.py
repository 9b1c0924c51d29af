"""Double of the part of ``exca`` that neuralset's extractors use: ``MapInfra`` (see tests/doubles/README.md).

Mirrors exca 0.5.x's structure, which brainrl's one-pass patch relies on: ``@infra.apply(item_uid=...)``
turns the method into a ``property`` whose getter is a ``MapInfraMethod`` holding the undecorated
function in ``.method``; each extractor's ``infra`` shares that ``_infra_method``; a call computes only
the items missing from the cache, **shuffled**, by calling ``infra._infra_method.method(obj, items)``
(read at call time), checks that exactly one output was yielded per item, stores them under
``item_uid(item)`` and returns them in the order asked. The cache here is in RAM only. Not exca.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, Iterator

import numpy as np

__version__ = "0.0.0+double"


class MapInfraMethod:
    """The getter of the property that replaces the decorated method; ``method`` is the raw function."""

    def __init__(self, method: Callable, item_uid: Callable[[Any], str]):
        self.method = method
        self.item_uid = item_uid

    def __call__(self, obj: Any) -> Callable[[Iterable[Any]], Iterator[Any]]:
        infra = obj.infra
        if infra._infra_method is not self:  # an overriding infra bypasses caching, as in exca
            return lambda items: self.method(obj, items)
        return infra._method_override


class MapInfra:
    def __init__(self, **settings: Any):
        self.settings = dict(settings)
        self.folder = settings.get("folder")
        self.keep_in_ram = settings.get("keep_in_ram", True)
        self._infra_method: MapInfraMethod | None = None
        self._obj: Any = None
        self._cache: dict[str, Any] = {}

    def apply(self, *, item_uid: Callable[[Any], str], exclude_from_cache_uid: Any = (), cache_type: str | None = None):
        if self._infra_method is not None:
            raise RuntimeError(f"Infra was already applied: {self._infra_method}")

        def applier(method: Callable) -> property:
            self._infra_method = MapInfraMethod(method, item_uid)
            return property(self._infra_method)

        return applier

    def bind(self, obj: Any, **settings: Any) -> "MapInfra":
        """The instance's infra: same ``_infra_method`` as the class default, its own cache."""
        infra = copy.copy(self)
        infra.settings = {**self.settings, **settings}
        infra.folder = infra.settings.get("folder")
        infra.keep_in_ram = infra.settings.get("keep_in_ram", True)
        infra._obj = obj
        infra._cache = {}
        return infra

    @property
    def item_uid(self) -> Callable[[Any], str]:
        return self._infra_method.item_uid

    def _method_override(self, items: Iterable[Any]) -> Iterator[Any]:
        imethod = self._infra_method
        keyed = [(imethod.item_uid(item), item) for item in items]
        missing = [(k, item) for k, item in dict(keyed).items() if k not in self._cache]
        if missing:
            np.random.shuffle(missing)
            outputs = list(imethod.method(self._obj, [item for _, item in missing]))
            if len(outputs) != len(missing):
                raise RuntimeError(f"Cached function did not yield exactly once per item: {len(outputs)} != {len(missing)}")
            for (k, _), output in zip(missing, outputs):
                self._cache[k] = output
        return (self._cache[k] for k, _ in keyed)
