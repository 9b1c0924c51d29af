"""Content-addressed caches of BrainMaps: ``MapCache`` on disk and ``MemoryCache`` in RAM.

Why: a map is a pure function of (stimulus, model identity, settings), so its key is a hash of exactly
those, and a stored map can be reused by any process or run that asks the same question. Disk entries
are ``<key>.npy`` (the float32 data) plus ``<key>.json`` (metadata: provenance, key parts, SHA-256 of
the data bytes, shape, dtype, creation time, brainrl version). Writes are atomic (temporary file in the
same folder, fsync, ``os.replace``), so readers and concurrent writers never see half an entry; reads
verify shape, dtype and checksum, and a damaged entry is logged, deleted and reported as a miss. A size
cap evicts the least recently used entries (reads refresh an entry's modification time).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from brainrl.brain.base import BrainMap
from brainrl.provenance import content_hash, stable_json

log = logging.getLogger(__name__)

#: Bump when the on-disk layout or the key recipe changes; it is part of every key.
CACHE_FORMAT_VERSION = 1
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_TMP_PREFIX = ".tmp-"


def map_key(stimulus, model_identity: dict[str, Any], settings: dict[str, Any] | None = None) -> str:
    """Cache key of the map a model with ``model_identity`` predicts for ``stimulus``."""
    return content_hash(key_parts(stimulus, model_identity, settings))


def map_keys(stimuli, model_identity: dict[str, Any], settings: dict[str, Any] | None = None) -> list[str]:
    """``[map_key(s, model_identity, settings) for s in stimuli]``, the same keys, with the model's part of
    the canonical JSON written once for the batch instead of once per stimulus."""
    # stable_json sorts keys: cache_format, model, settings, then stimulus (a hex string, nothing to escape)
    head = stable_json({"cache_format": CACHE_FORMAT_VERSION, "model": model_identity, "settings": settings or {}})
    head = head[:-1] + ',"stimulus":"'
    return [content_hash(f'{head}{s.key()}"}}') for s in stimuli]


def key_parts(stimulus, model_identity: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a key is made of, stored with the entry so a cache can be audited."""
    return {
        "stimulus": stimulus.key(),
        "model": model_identity,
        "settings": settings or {},
        "cache_format": CACHE_FORMAT_VERSION,
    }


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(
            f"Cache keys are lowercase hex strings of 16-64 characters (from key_for/map_key); got {key!r}."
        )
    return key


class MemoryCache:
    """In-process LRU of BrainMaps by key. Maps are returned as stored: treat them as read-only."""

    def __init__(self, max_items: int = 1024):
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}.")
        self.max_items = max_items
        self._items: OrderedDict[str, BrainMap] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> BrainMap | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key: str, brain_map: BrainMap) -> None:
        if self.max_items == 0:
            return
        with self._lock:
            self._items[key] = brain_map
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
                self.evictions += 1

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._items), "max_items": self.max_items, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions}


class MapCache:
    """BrainMaps on disk under ``root``, addressed by content key, capped at ``max_bytes``.

    ``memory_items > 0`` puts a ``MemoryCache`` in front (checked first, filled on disk hits).
    Safe for several processes sharing one folder: entries appear atomically and identical keys hold
    identical content, so the last writer wins harmlessly.
    """

    def __init__(self, root: str | os.PathLike, max_bytes: int | None = 2 * 2**30, memory_items: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive or None (no cap), got {max_bytes}.")
        self.max_bytes = max_bytes
        self.memory = MemoryCache(memory_items) if memory_items > 0 else None
        self._lock = threading.Lock()
        self._approx_bytes: int | None = None  # refreshed by a scan whenever it crosses the cap
        self.hits = self.misses = self.corrupt = self.evictions = self.writes = 0

    # -- keys -----------------------------------------------------------------------------------
    @staticmethod
    def key_for(stimulus, model_identity: dict[str, Any], settings: dict[str, Any] | None = None) -> str:
        return map_key(stimulus, model_identity, settings)

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = self.root / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.json"

    # -- read -----------------------------------------------------------------------------------
    def get(self, key: str) -> BrainMap | None:
        """The stored map, or None on a miss. A damaged entry is deleted and counts as a miss."""
        _check_key(key)
        if self.memory is not None:
            hit = self.memory.get(key)
            if hit is not None:
                self.hits += 1
                return hit
        data_path, meta_path = self._paths(key)
        if not os.path.lexists(meta_path):
            self.misses += 1
            return None
        try:
            brain_map = self._load(key, meta_path.read_bytes(), data_path)
        except FileNotFoundError:  # evicted or cleared by another process between the two reads
            self.misses += 1
            self._delete(key)
            return None
        except Exception as err:  # anything wrong with the entry (bytes, encoding, JSON, a folder where a
            # file should be, shapes, checksum): drop it, let the caller recompute
            log.warning("map cache: dropping damaged entry %s (%s: %s)", key, type(err).__name__, err)
            self.corrupt += 1
            self.misses += 1
            self._delete(key)
            return None
        try:
            os.utime(meta_path)  # least-recently-used order follows the metadata file's mtime
        except OSError:  # gone meanwhile, or a read-only cache: the hit stands
            pass
        self.hits += 1
        if self.memory is not None:
            self.memory.put(key, brain_map)
        return brain_map

    @staticmethod
    def _load(key: str, meta_bytes: bytes, data_path: Path) -> BrainMap:
        meta = json.loads(meta_bytes.decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise ValueError("metadata does not belong to this key")
        if meta.get("format") != CACHE_FORMAT_VERSION:
            raise ValueError(f"cache format {meta.get('format')!r} != {CACHE_FORMAT_VERSION}")
        data = np.load(data_path, allow_pickle=False)
        if list(data.shape) != list(meta["shape"]) or str(data.dtype) != meta["dtype"]:
            raise ValueError(f"data is {data.shape} {data.dtype}, metadata says {meta['shape']} {meta['dtype']}")
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
        if digest != meta["sha256"]:
            raise ValueError("checksum mismatch")
        return BrainMap(data=data, provenance=meta.get("provenance", {}), tr=float(meta["tr"]), space=meta["space"])

    # -- write ----------------------------------------------------------------------------------
    def put(self, key: str, brain_map: BrainMap, key_parts: dict[str, Any] | None = None) -> bool:
        """Store ``brain_map`` under ``key`` (``key_parts`` are kept for auditing). Returns False when
        the map alone exceeds ``max_bytes`` or cannot be written (full or read-only disk: logged, not raised)."""
        _check_key(key)
        if not isinstance(brain_map, BrainMap):
            raise TypeError(f"MapCache stores BrainMap objects, got {type(brain_map).__name__}.")
        if self.memory is not None:
            self.memory.put(key, brain_map)
        data = np.ascontiguousarray(brain_map.data)
        from brainrl import __version__

        meta = {
            "key": key,
            "format": CACHE_FORMAT_VERSION,
            "key_parts": key_parts,
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
            "tr": brain_map.tr,
            "space": brain_map.space,
            "provenance": brain_map.provenance,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "brainrl_version": __version__,
        }
        meta_bytes = json.dumps(meta, sort_keys=True, default=str, indent=1).encode("utf-8")
        entry_bytes = data.nbytes + 128 + len(meta_bytes)
        if self.max_bytes is not None and entry_bytes > self.max_bytes:
            log.warning("map cache: entry %s (%d bytes) is larger than max_bytes=%d; not stored",
                        key, entry_bytes, self.max_bytes)
            return False
        data_path, meta_path = self._paths(key)
        try:
            data_path.parent.mkdir(parents=True, exist_ok=True)
            for path in (meta_path, data_path):  # a damaged entry of another kind (a folder, say) goes first
                if path.is_dir() and not path.is_symlink():
                    self._delete(key)
            # data first, metadata last: a metadata file only ever points at complete data
            self._atomic_write(data_path, lambda fh: np.save(fh, data, allow_pickle=False))
            self._atomic_write(meta_path, lambda fh: fh.write(meta_bytes))
        except OSError as err:  # a full or read-only disk costs the cache entry, not the run
            log.warning("map cache: cannot store entry %s (%s: %s)", key, type(err).__name__, err)
            return False
        self.writes += 1
        with self._lock:
            if self._approx_bytes is not None:
                self._approx_bytes += entry_bytes
        if self.max_bytes is not None and self._total_bytes_estimate() > self.max_bytes:
            self.evict()
        return True

    @staticmethod
    def _atomic_write(path: Path, write) -> None:
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    # -- size, eviction, maintenance --------------------------------------------------------------
    def _entries(self) -> Iterator[tuple[str, Path, Path]]:
        for meta_path in self.root.glob("??/*.json"):
            key = meta_path.stem
            if _KEY.match(key):
                yield key, meta_path.with_suffix(".npy"), meta_path

    def _scan(self) -> list[tuple[float, int, str]]:
        """(last use, bytes, key) of every complete entry."""
        out = []
        for key, data_path, meta_path in self._entries():
            try:
                st_meta = meta_path.stat()
                size = st_meta.st_size + data_path.stat().st_size
            except FileNotFoundError:
                continue
            out.append((st_meta.st_mtime, size, key))
        return out

    def _total_bytes_estimate(self) -> int:
        with self._lock:
            if self._approx_bytes is None:
                self._approx_bytes = sum(size for _, size, _ in self._scan())
            return self._approx_bytes

    def evict(self) -> int:
        """Delete least recently used entries until the cache fits in ``max_bytes``; returns how many."""
        if self.max_bytes is None:
            return 0
        entries = sorted(self._scan())
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, key in entries:
            if total <= self.max_bytes:
                break
            self._delete(key)
            total -= size
            removed += 1
        self._remove_stale_temporaries()
        with self._lock:
            self._approx_bytes = total
        self.evictions += removed
        return removed

    def _remove_stale_temporaries(self, older_than_s: float = 3600.0) -> None:
        """Temporary files and data without metadata left by a writer that crashed (fresh ones may
        belong to a live writer, so only files older than ``older_than_s`` go)."""
        now = time.time()
        orphans = [p for p in self.root.glob("??/*.npy") if not p.with_suffix(".json").exists()]
        for path in list(self.root.glob(f"??/{_TMP_PREFIX}*")) + orphans:
            try:
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
            except FileNotFoundError:
                pass

    def _delete(self, key: str) -> None:
        data_path, meta_path = self._paths(key)
        for path in (meta_path, data_path):  # metadata first, so no reader trusts a half-deleted entry
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:  # e.g. a read-only cache: the entry stays a miss, the run goes on
                log.warning("map cache: cannot delete %s (%s)", path, err)

    def __contains__(self, key: str) -> bool:
        return self._paths(_check_key(key))[1].exists()

    def __len__(self) -> int:
        return sum(1 for _ in self._entries())

    def clear(self) -> None:
        """Delete every entry (and stray temporary files)."""
        for key, _, _ in list(self._entries()):
            self._delete(key)
        self._remove_stale_temporaries(older_than_s=-1.0)
        if self.memory is not None:
            self.memory.clear()
        with self._lock:
            self._approx_bytes = 0

    def stats(self) -> dict[str, Any]:
        entries = self._scan()
        return {
            "root": str(self.root),
            "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries),
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
            "evictions": self.evictions,
            "writes": self.writes,
            "memory": self.memory.stats() if self.memory is not None else None,
        }
