"""Text -> predicted brain maps, in batches, through speech, a brain model and the caches."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from brainrl.brain.base import BRAIN_MODELS, BrainMap, BrainModel, Failed, Prediction
from brainrl.brain.cache import MapCache, MemoryCache, key_parts, map_key, map_keys
from brainrl.configs import check_range
from brainrl.provenance import content_hash, versions
from brainrl.registry import unknown_name_error
from brainrl.stimulus import MAX_WORDS, SPEECH_ENGINES, EmptyTextError, SpeechEngine, Stimulus

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    root = os.environ.get("BRAINRL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "brainrl"
    )
    return Path(root)


@dataclass
class PipelineConfig:
    """Which speech engine and brain model turn texts into maps, and how results are cached.

    Switching the offline defaults to the real backends is a change here (``model: tribe``), not of code.
    """

    speech: str = "espeak"
    speech_kwargs: dict[str, Any] = field(default_factory=dict)
    model: str = "synthetic"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: disk cache folder; "" disables the disk cache, None means ``$BRAINRL_CACHE/maps``
    cache_dir: str | None = None
    cache_max_gb: float = 2.0
    memory_items: int = 1024
    max_words: int = MAX_WORDS
    #: texts per speech chunk: the next chunk is spoken (in a thread, or the engine's worker processes)
    #: while the brain model predicts the current one; 0 = speak the whole batch first, then predict
    #: (an engine without audio, ``text-only``, is never chunked)
    speech_chunk: int = 8

    def __post_init__(self) -> None:
        for registry, name in ((SPEECH_ENGINES, self.speech), (BRAIN_MODELS, self.model)):
            if name not in registry:
                raise unknown_name_error(registry.kind, name, registry.names())
        check_range("brain.cache_max_gb", self.cache_max_gb, 0, low_open=True)
        check_range("brain.memory_items", self.memory_items, 0, fix="0 turns the in-memory map cache off.")
        check_range("brain.max_words", self.max_words, 1)
        check_range("brain.speech_chunk", self.speech_chunk, 0, fix="0 speaks the whole batch before predicting.")

    def key(self) -> str:
        return content_hash(asdict(self))


class BrainPipeline:
    """Turns a batch of texts into ``BrainMap``s (or ``Failed`` items) in one pass per stage."""

    _shared: dict[str, "BrainPipeline"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, config: PipelineConfig | None = None, *, speech: SpeechEngine | None = None,
                 model: BrainModel | None = None):
        self.config = config or PipelineConfig()
        cfg = self.config
        self.speech = speech or SPEECH_ENGINES.create(cfg.speech, max_words=cfg.max_words, **cfg.speech_kwargs)
        self.model = model or BRAIN_MODELS.create(cfg.model, **cfg.model_kwargs)
        self.memory = MemoryCache(cfg.memory_items)
        self.disk = None
        if cfg.cache_dir != "":
            folder = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir() / "maps"
            self.disk = MapCache(folder, max_bytes=int(cfg.cache_max_gb * 2**30))
        self.counters = {"requested": 0, "memory_hits": 0, "disk_hits": 0, "predicted": 0, "failed": 0}

    @classmethod
    def shared(cls, config: PipelineConfig | None = None) -> "BrainPipeline":
        """One pipeline per process per config, so several rewards share models and cached maps."""
        config = config or PipelineConfig()
        key = config.key()
        with cls._shared_lock:
            if key not in cls._shared:
                cls._shared[key] = cls(config)
            return cls._shared[key]

    # -- the batch path -------------------------------------------------------------------------
    def __call__(self, texts: Sequence[str]) -> list[Prediction]:
        return self.predict_texts(texts)

    def predict_texts(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text, in order. Empty or unspeakable texts come back as ``Failed``.

        Speech and prediction overlap: while the model predicts one chunk of ``speech_chunk`` texts, the
        next chunk is being spoken (espeak runs in C without the GIL, or in the engine's worker
        processes), so a 2-core machine keeps both cores busy. Results do not depend on the chunking. An
        engine that makes no audio (``text-only``) is not chunked: its model gets the whole batch at once."""
        texts = list(texts)
        results: list[Prediction | None] = [None] * len(texts)
        self.counters["requested"] += len(texts)
        size = self.config.speech_chunk if getattr(self.speech, "speaks", True) else 0
        if not size or len(texts) <= size:
            self._predict_spoken(0, self.speech.synthesize_safe(texts), results)
        else:
            from concurrent.futures import ThreadPoolExecutor

            starts = list(range(0, len(texts), size))
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainrl-speech") as speaker:
                pending = speaker.submit(self.speech.synthesize_safe, texts[:size])
                for k, start in enumerate(starts):
                    spoken = pending.result()
                    if k + 1 < len(starts):
                        pending = speaker.submit(self.speech.synthesize_safe, texts[starts[k + 1]:starts[k + 1] + size])
                    self._predict_spoken(start, spoken, results)
        self.counters["failed"] += sum(isinstance(r, Failed) for r in results)
        return results  # type: ignore[return-value]

    def _predict_spoken(self, start: int, outcomes: Sequence[Stimulus | Exception], results: list) -> None:
        """Predict one chunk of speech outcomes into ``results[start:]`` (failed speech fails its item)."""
        stimuli: dict[int, Stimulus] = {}
        for i, outcome in enumerate(outcomes, start):
            if isinstance(outcome, Stimulus):
                stimuli[i] = outcome
            elif isinstance(outcome, EmptyTextError):
                results[i] = Failed(f"empty completion: {outcome}")
            else:  # a speech failure loses only this item
                log.warning("speech synthesis failed for item %d: %s", i, outcome)
                results[i] = Failed(f"speech synthesis failed: {type(outcome).__name__}: {outcome}")
        if stimuli:
            self._predict_stimuli(stimuli, results)

    def _predict_stimuli(self, stimuli: dict[int, Stimulus], results: list) -> list:
        if not stimuli:
            return results
        try:
            identity = self.model.identity()
        except Exception as err:  # e.g. a remote brain server that is down: these items fail, training goes on
            log.warning("brain model identity unavailable, %d items fail: %s", len(stimuli), err)
            for i in stimuli:
                results[i] = Failed(f"brain model unavailable: {type(err).__name__}: {err}")
            return results
        keys = dict(zip(stimuli, map_keys(stimuli.values(), identity)))
        todo: dict[str, list[int]] = {}
        for i, key in keys.items():
            hit = self.memory.get(key)
            if hit is None and self.disk is not None:
                hit = self.disk.get(key)
                if hit is not None:
                    self.counters["disk_hits"] += 1
                    self.memory.put(key, hit)
            elif hit is not None:
                self.counters["memory_hits"] += 1
            if hit is not None:
                results[i] = hit
            else:
                todo.setdefault(key, []).append(i)  # identical texts in one batch are predicted once
        if todo:
            order = list(todo)
            batch = [stimuli[todo[k][0]] for k in order]
            try:
                predictions = self.model.predict(batch)
                if len(predictions) != len(batch):
                    raise RuntimeError(f"model returned {len(predictions)} maps for {len(batch)} stimuli")
            except Exception as err:
                log.warning("brain model failed on a batch of %d: %s", len(batch), err)
                predictions = [Failed(f"brain model failed: {type(err).__name__}: {err}")] * len(batch)
            self.counters["predicted"] += len(batch)
            for key, stim, pred in zip(order, batch, predictions):
                if isinstance(pred, BrainMap):
                    pred.provenance.setdefault("stimulus", stim.provenance())
                    pred.provenance.setdefault("cache_key", key)
                    self.memory.put(key, pred)
                    if self.disk is not None:
                        self.disk.put(key, pred, key_parts=key_parts(stim, identity))
                for i in todo[key]:
                    results[i] = pred
        return results

    def cache_key(self, stimulus: Stimulus, identity: dict[str, Any] | None = None) -> str:
        """Everything that changes a map: the speech (text, engine, version, voice) and the model."""
        return map_key(stimulus, identity if identity is not None else self.model.identity())

    def describe(self) -> dict[str, Any]:
        """Provenance of the whole pipeline, for run cards."""
        return {
            "pipeline": asdict(self.config),
            "speech": self.speech.describe(),
            "model": self.model.identity(),
            "versions": versions(),
        }

    def close(self) -> None:
        self.model.close()
