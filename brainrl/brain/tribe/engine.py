"""Runs the real ``tribev2`` package in this process: load once, keep feature models resident, predict
many stimuli per call. Used directly (``worker=False``) and inside the worker process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from brainrl.brain.tribe.config import REFERENCE_SPEECH_ENGINES, TribeConfig
from brainrl.brain.tribe.events import build_events, content_audio_path, split_by_timeline, timeline_id
from brainrl.brain.tribe.one_pass_extractor import OnePassStats, one_pass_text_features, text_infra_method
from brainrl.provenance import package_version
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)

#: What one item of ``TribeEngine.predict`` is: a (T, 20484) array, or the reason it failed.
ItemResult = np.ndarray | str


def check_speech_path(stimulus: Stimulus, speech_path: str) -> None:
    """The reference path must get gTTS+WhisperX stimuli and the fast path must not (results differ)."""
    is_reference = stimulus.engine in REFERENCE_SPEECH_ENGINES
    if speech_path == "reference" and not is_reference:
        raise ValueError(
            f"speech_path='reference' expects stimuli from {REFERENCE_SPEECH_ENGINES}, got engine "
            f"{stimulus.engine!r}. Use the 'gtts-whisperx' speech engine or speech_path='fast'."
        )
    if speech_path == "fast" and is_reference:
        raise ValueError(
            f"speech_path='fast' got a {stimulus.engine!r} stimulus; set speech_path='reference' for gTTS+WhisperX."
        )


def resolve_checkpoint(config: TribeConfig) -> str:
    """A local folder holding config.yaml and the checkpoint, downloaded at the pinned revision.

    ``TribeModel.from_pretrained`` takes no revision (it downloads the newest files of a repo id), so
    the snapshot is fetched here and the local folder is passed on. Its config.yaml is parsed with
    ``yaml.UnsafeLoader``, another reason to pin.
    """
    if config.checkpoint_dir:
        folder = Path(config.checkpoint_dir)
        if not (folder / "config.yaml").is_file() or not (folder / config.checkpoint_name).is_file():
            raise FileNotFoundError(
                f"{folder} must hold config.yaml and {config.checkpoint_name} (a snapshot of {config.repo_id})."
            )
        return str(folder)
    from huggingface_hub import snapshot_download

    return snapshot_download(
        config.repo_id, revision=config.revision, allow_patterns=["config.yaml", config.checkpoint_name]
    )


class TribeEngine:
    """One loaded ``tribev2.demo_utils.TribeModel`` and the code around it."""

    def __init__(self, config: TribeConfig):
        self.config = config
        self.cache_folder = Path(config.cache_folder or tempfile.mkdtemp(prefix="brainrl-tribe-"))
        self.audio_dir = self.cache_folder / "brainrl-audio"
        # TRIBE's own feature cache, one per text-feature mode: its text uids (text + context) do not
        # say how a feature was computed, so the modes must not share it
        self.tribe_cache = self.cache_folder / f"tribe-{config.text_features}"
        self.text_stats = OnePassStats()
        self._model: Any = None
        self.load_seconds: float | None = None

    # -- loading -------------------------------------------------------------------------------------
    def load(self) -> "TribeEngine":
        if self._model is not None:
            return self
        started = time.perf_counter()
        from tribev2.demo_utils import TribeModel

        folder = resolve_checkpoint(self.config)
        self._model = TribeModel.from_pretrained(
            folder,
            checkpoint_name=self.config.checkpoint_name,
            cache_folder=str(self.tribe_cache),
            device=self.config.device,
            config_update=self.config.tribe_config_update(),
        )
        self._model.remove_empty_segments = True
        self._load_feature_models()
        if self.config.text_features == "one-pass":
            text_infra_method(self._text_extractor())  # fail at load, not mid-training, if it cannot work
        self.load_seconds = time.perf_counter() - started
        log.info("TRIBE v2 loaded from %s in %.1f s", folder, self.load_seconds)
        return self

    def _load_feature_models(self) -> None:
        """Load the text and audio models now, in float32 for the reference (transformers 5 would load
        Llama in bf16 by default), so the first predict does not pay for it and they stay resident."""
        import torch

        data = getattr(self._model, "data", None)
        for name in ("text_feature", "audio_feature"):
            extractor = getattr(data, name, None)
            module = getattr(extractor, "model", None) if extractor is not None else None
            if isinstance(module, torch.nn.Module) and self.config.dtype == "float32":
                module.to(torch.float32)

    @contextlib.contextmanager
    def _resident_extractors(self) -> Iterator[None]:
        """TRIBE deletes each feature model after ``prepare`` (``tribev2.main._free_extractor_model``),
        so every call would reload Llama and w2v-bert. Skip that while we predict."""
        import tribev2.main as tribe_main

        original = getattr(tribe_main, "_free_extractor_model", None)
        tribe_main._free_extractor_model = lambda extractor: None
        try:
            yield
        finally:
            if original is not None:
                tribe_main._free_extractor_model = original

    def _text_extractor(self) -> Any:
        extractor = getattr(getattr(self._model, "data", None), "text_feature", None)
        if extractor is None:
            raise RuntimeError("This TRIBE model has no data.text_feature extractor; use text_features='reference'.")
        return extractor

    def _text_feature_mode(self):
        """One-pass Word features inside TRIBE's extractor (one_pass_extractor.py), or TRIBE's own."""
        if self.config.text_features != "one-pass":
            return contextlib.nullcontext()
        return one_pass_text_features(self._text_extractor(), self.config.text_batch_size, self.text_stats)

    def _autocast(self):
        import torch

        if self.config.dtype == "bfloat16":
            device_type = "cuda" if str(self.config.device).startswith("cuda") else "cpu"
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def identity(self) -> dict[str, Any]:
        return {
            "name": "tribe",
            **self.config.result_settings(),
            "tribev2": package_version("tribev2"),
            "neuralset": package_version("neuralset"),
            "torch": package_version("torch"),
            "transformers": package_version("transformers"),
        }

    # -- prediction ----------------------------------------------------------------------------------
    def predict(self, stimuli: Sequence[Stimulus]) -> list[ItemResult]:
        """One (T, 20484) array or a failure reason per stimulus, in order."""
        self.load()
        results: list[ItemResult] = []
        step = self.config.max_stimuli_per_call
        for begin in range(0, len(stimuli), step):
            results.extend(self._predict_chunk(list(stimuli[begin : begin + step])))
        return results

    def _predict_chunk(self, stimuli: list[Stimulus]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(stimuli)
        ready: list[int] = []
        audio_paths: dict[int, Path] = {}
        for index, stimulus in enumerate(stimuli):
            try:
                check_speech_path(stimulus, self.config.speech_path)
                audio_paths[index] = content_audio_path(stimulus, self.audio_dir)
                ready.append(index)
            except (ValueError, FileNotFoundError) as error:
                results[index] = f"invalid stimulus: {error}"
        if ready:
            try:
                batch = self._run([stimuli[i] for i in ready], [audio_paths[i] for i in ready], ready)
                for index, value in zip(ready, batch):
                    results[index] = value
            except Exception as error:  # noqa: BLE001 - isolate the bad item(s): retry one by one
                if len(ready) == 1:
                    results[ready[0]] = f"TRIBE predict failed: {type(error).__name__}: {error}"
                else:
                    log.warning("TRIBE batch of %d failed (%s); retrying items one by one", len(ready), error)
                    for index in ready:
                        try:
                            results[index] = self._run([stimuli[index]], [audio_paths[index]], [index])[0]
                        except Exception as item_error:  # noqa: BLE001
                            results[index] = f"TRIBE predict failed: {type(item_error).__name__}: {item_error}"
        return [r if r is not None else "internal error: no result" for r in results]

    def _run(self, stimuli: list[Stimulus], audio_paths: list[Path], indices: list[int]) -> list[ItemResult]:
        timelines = [timeline_id(i, s) for i, s in zip(indices, stimuli)]
        reference = self.config.speech_path == "reference"
        events = build_events(
            stimuli,
            timelines,
            audio_paths,
            with_context=not reference,
            max_context_words=self.config.max_context_words,
        )
        if reference:  # path A: TRIBE's transforms rebuild sentences and contexts from the Word rows
            from tribev2.demo_utils import get_audio_and_text_events

            events = get_audio_and_text_events(events)
        import torch

        with self._resident_extractors(), self._text_feature_mode(), torch.inference_mode(), self._autocast():
            preds, segments = self._model.predict(events=events, verbose=False)
        by_timeline = split_by_timeline(preds, segments, timelines)
        out: list[ItemResult] = []
        for stimulus, timeline in zip(stimuli, timelines):
            maps = by_timeline.get(timeline)
            if maps is None or maps.shape[0] == 0:
                out.append("TRIBE kept no TR for this stimulus (no events overlapped its window)")
                continue
            expected = math.ceil(stimulus.duration - 1e-6)
            if maps.shape[0] > max(expected, 1) + 1:
                log.warning("timeline %s: %d TRs for %.2f s of audio", timeline, maps.shape[0], stimulus.duration)
            if not np.isfinite(maps).all():
                out.append("TRIBE returned non-finite values")
                continue
            out.append(np.ascontiguousarray(maps, dtype=np.float32))
        return out
