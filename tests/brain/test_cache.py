"""MapCache and MemoryCache: round trip, keys, damaged entries, eviction, atomicity, concurrency."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

from brainrl.brain import BrainMap
from brainrl.brain.cache import CACHE_FORMAT_VERSION, MapCache, MemoryCache, key_parts, map_key, map_keys
from brainrl.provenance import content_hash
from brainrl.stimulus import Stimulus, Word


def stimulus(text: str = "Hello there.", engine_version: str = "1", voice: str = "") -> Stimulus:
    return Stimulus(text=text, words=[Word("Hello", 0.0, 0.4), Word("there", 0.4, 0.4)], audio_path=None,
                    sample_rate=16000, duration=1.2, engine="hand-built", engine_version=engine_version,
                    voice=voice, waveform=np.zeros(19200, np.float32))


def brain_map(frames: int = 3, fill: float | None = None, seed: int = 0) -> BrainMap:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((frames, 20484)).astype(np.float32) if fill is None else np.full(
        (frames, 20484), fill, np.float32)
    return BrainMap(data=data, provenance={"model": "test", "seed": seed, "synthetic": True})


IDENTITY = {"model": "synthetic", "version": 1, "seed": 0}


def entry_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_round_trip(tmp_path):
    cache = MapCache(tmp_path)
    key = cache.key_for(stimulus(), IDENTITY)
    assert cache.get(key) is None
    original = brain_map()
    assert cache.put(key, original, key_parts={"note": "audit"})
    restored = cache.get(key)
    assert restored is not None and restored is not original
    assert restored.data.tobytes() == original.data.tobytes() and restored.data.dtype == np.float32
    assert restored.provenance == original.provenance and restored.tr == 1.0 and restored.space == "fsaverage5"
    meta = json.loads((tmp_path / key[:2] / f"{key}.json").read_text())
    assert meta["shape"] == [3, 20484] and meta["dtype"] == "float32" and len(meta["sha256"]) == 64
    assert meta["key_parts"] == {"note": "audit"} and meta["brainrl_version"] and meta["created"]
    stats = cache.stats()
    assert (stats["entries"], stats["hits"], stats["misses"], stats["writes"]) == (1, 1, 1, 1)
    assert key in cache and len(cache) == 1


def test_key_changes_with_every_part():
    base = map_key(stimulus(), IDENTITY)
    assert base == map_key(stimulus(), dict(IDENTITY)) == MapCache.key_for(stimulus(), IDENTITY)
    variants = [
        map_key(stimulus(text="Hello there!"), IDENTITY),
        map_key(stimulus(engine_version="2"), IDENTITY),
        map_key(stimulus(voice="en-gb"), IDENTITY),
        map_key(stimulus(), {**IDENTITY, "seed": 1}),
        map_key(stimulus(), {**IDENTITY, "version": 2}),
        map_key(stimulus(), IDENTITY, settings={"hemisphere": "left"}),
    ]
    assert len(set(variants + [base])) == len(variants) + 1
    assert CACHE_FORMAT_VERSION == 1  # the format version is inside every key (see key_parts)


def test_batch_keys_and_stimulus_keys_are_the_canonical_ones():
    """The pipeline's batch keys (the model's JSON written once) and ``Stimulus.key`` (its JSON written
    directly) are the hashes of the canonical JSON of their parts, so every stored cache entry stays valid."""
    tricky = 'Caf\u00e9 "quoted" \\ back\u2014slash \u4f60\u597d\nnew'
    stimuli = [stimulus(), stimulus(text=tricky, voice="en-gb"), stimulus(text="\t\x00 \u200f", engine_version="2")]
    identity = {**IDENTITY, "nested": {"b": [1, 2.5], "a": None}}
    for settings in (None, {"hemisphere": "left"}):
        assert map_keys(stimuli, identity, settings) == [map_key(s, identity, settings) for s in stimuli] == \
            [content_hash(key_parts(s, identity, settings)) for s in stimuli]
    for s in stimuli:
        assert s.key() == content_hash({"text": s.text, "engine": s.engine, "engine_version": s.engine_version,
                                        "voice": s.voice})
    # the same keys as before they were written out by hand (brainrl 0.1.0 at commit 257b4da)
    odd = stimulus(text=tricky, voice="en-gb")
    assert odd.key() == "3ff395dd0c3ba0fef31b564156144e00"
    assert map_keys([odd], identity) == ["0282e96badeb5a84865508f01c1dedc8"]


def test_keys_are_validated(tmp_path):
    cache = MapCache(tmp_path)
    for bad in ("../../etc/passwd", "ABC", ""):
        with pytest.raises(ValueError, match="hex"):
            cache.get(bad)
    with pytest.raises(TypeError, match="BrainMap"):
        cache.put("ab" * 16, np.zeros((1, 20484), np.float32))


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # inside the float data, past the .npy header
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _bad_json(path: Path) -> None:
    path.with_suffix(".json").write_text("{not json")


def _wrong_shape(path: Path) -> None:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [4, 20484]
    meta_path.write_text(json.dumps(meta))


def _not_utf8(path: Path) -> None:
    path.with_suffix(".json").write_bytes(b'{"key": "\xff\xfe broken"}')


def _meta_is_a_folder(path: Path) -> None:
    meta_path = path.with_suffix(".json")
    meta_path.unlink()
    (meta_path / "inside").mkdir(parents=True)


def _data_is_a_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _meta_not_an_object(path: Path) -> None:
    path.with_suffix(".json").write_text("[1, 2, 3]")


def _meta_missing_fields(path: Path) -> None:
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["sha256"], meta["tr"]
    meta_path.write_text(json.dumps(meta))


def _meta_empty(path: Path) -> None:
    path.with_suffix(".json").write_bytes(b"")


def _data_pickled(path: Path) -> None:
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("damage", [_flip_bytes, _truncate, _bad_json, _wrong_shape, _not_utf8, _meta_is_a_folder,
                                    _data_is_a_folder, _meta_not_an_object, _meta_missing_fields, _meta_empty,
                                    _data_pickled])
def test_damaged_entry_is_a_miss_and_is_deleted(tmp_path, damage, caplog):
    cache = MapCache(tmp_path)
    key = map_key(stimulus(), IDENTITY)
    cache.put(key, brain_map())
    damage(tmp_path / key[:2] / f"{key}.npy")
    assert cache.get(key) is None
    assert "damaged entry" in caplog.text
    assert entry_files(tmp_path) == []
    assert cache.stats()["corrupt"] == 1
    assert cache.put(key, brain_map())  # the caller recomputes and stores again
    assert cache.get(key) is not None


def test_damaged_entry_is_recomputed_by_the_pipeline(tmp_path):
    """On main a metadata file that is not UTF-8 made every later predict raise UnicodeDecodeError."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from tests.helpers import CountingSpeech, LengthBrain

    def pipeline() -> BrainPipeline:
        return BrainPipeline(PipelineConfig(cache_dir=str(tmp_path / "maps")), speech=CountingSpeech(),
                             model=LengthBrain())

    [first] = pipeline().predict_texts(["a cached text"])
    [meta] = list((tmp_path / "maps").rglob("*.json"))
    meta.write_bytes(b"\xff" + meta.read_bytes())
    later = pipeline()
    [again] = later.predict_texts(["a cached text"])
    assert isinstance(again, BrainMap) and later.counters["predicted"] == 1
    np.testing.assert_array_equal(again.data, first.data)
    assert later.disk.get(list(later.disk._entries())[0][0]) is not None  # stored again, readable


def test_eviction_respects_max_bytes_and_recency(tmp_path):
    one = brain_map(frames=2)
    probe = MapCache(tmp_path / "probe", max_bytes=None)
    probe.put("0" * 32, one)
    entry_size = probe.stats()["bytes"]
    cache = MapCache(tmp_path / "capped", max_bytes=int(3.5 * entry_size))
    keys = [f"{i:032x}" for i in range(5)]
    for key in keys[:3]:
        cache.put(key, one)
        time.sleep(0.01)
    assert cache.get(keys[0]) is not None  # touch: keys[1] is now the least recently used
    time.sleep(0.01)
    cache.put(keys[3], one)
    time.sleep(0.01)
    cache.put(keys[4], one)
    stats = cache.stats()
    assert stats["bytes"] <= cache.max_bytes and stats["entries"] == 3
    assert [k in cache for k in keys] == [True, False, False, True, True]
    assert stats["evictions"] == 2


def test_entry_larger_than_the_cap_is_not_stored(tmp_path):
    cache = MapCache(tmp_path, max_bytes=1000)
    assert cache.put("ab" * 16, brain_map()) is False
    assert entry_files(tmp_path) == []


def test_atomic_writes_leave_no_temporaries(tmp_path):
    cache = MapCache(tmp_path)
    for i in range(5):
        cache.put(f"{i:032x}", brain_map(seed=i))
    names = [p.name for p in entry_files(tmp_path)]
    assert len(names) == 10 and not [n for n in names if n.startswith(".tmp-")]


def test_failed_write_cleans_up_its_temporary_and_costs_only_the_entry(tmp_path, monkeypatch, caplog):
    cache = MapCache(tmp_path)

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    assert cache.put("ab" * 16, brain_map()) is False
    assert "disk full" in caplog.text
    assert entry_files(tmp_path) == []


def test_clear_and_memory_layer(tmp_path):
    cache = MapCache(tmp_path, memory_items=2)
    key = "cd" * 16
    cache.put(key, brain_map())
    first = cache.get(key)
    assert cache.memory is not None and cache.memory.stats()["hits"] == 1  # served from RAM
    assert first is not None
    cache.clear()
    assert entry_files(tmp_path) == [] and cache.get(key) is None and cache.stats()["entries"] == 0


def test_memory_cache_is_lru():
    memory = MemoryCache(max_items=2)
    a, b, c = brain_map(seed=1), brain_map(seed=2), brain_map(seed=3)
    memory.put("a", a)
    memory.put("b", b)
    assert memory.get("a") is a
    memory.put("c", c)
    assert memory.get("b") is None and memory.get("a") is a and memory.get("c") is c
    assert memory.stats() == {"entries": 2, "max_items": 2, "hits": 3, "misses": 1, "evictions": 1}
    with pytest.raises(ValueError, match="max_items"):
        MemoryCache(-1)


def _writer(root: str, worker: int, rounds: int) -> None:
    cache = MapCache(root, max_bytes=None)
    shared = "ef" * 16
    for i in range(rounds):
        cache.put(shared, brain_map(frames=4, fill=7.0))  # every writer stores identical content
        cache.put(f"{worker:02x}{i:030x}", brain_map(frames=2, seed=worker * 1000 + i))
        got = cache.get(shared)
        if got is None or not np.all(got.data == 7.0):
            raise SystemExit(3)


def test_concurrent_writers_do_not_corrupt(tmp_path):
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = MapCache(tmp_path)
    shared = cache.get("ef" * 16)
    assert shared is not None and np.all(shared.data == 7.0)
    for w in range(2):
        for i in range(15):
            got = cache.get(f"{w:02x}{i:030x}")
            assert got is not None and got.data.tobytes() == brain_map(frames=2, seed=w * 1000 + i).data.tobytes()
    assert cache.stats()["corrupt"] == 0
    assert not [p for p in entry_files(tmp_path) if p.name.startswith(".tmp-")]
    assert os.listdir(tmp_path)
