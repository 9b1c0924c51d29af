"""Runs the real ``tribev2`` package in this process: load once, keep feature models resident, predict
many stimuli per call. Used directly (``worker=False``) and inside the worker process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from brainrl.brain.tribe.batched_audio import (BatchedAudioStats, batched_audio_features, make_batched_get_data,
                                               read_form_timed_arrays)
from brainrl.brain.tribe.batched_audio import unsupported_reason as batched_audio_unsupported
from brainrl.brain.tribe.config import REFERENCE_SPEECH_ENGINES, TribeConfig
from brainrl.brain.tribe.direct import DirectPredictor, DirectStats
from brainrl.brain.tribe.events import (build_events, content_audio_path, content_audio_target, split_by_timeline,
                                        timeline_id, tribe_audio_batch, tribe_audio_format)
from brainrl.brain.tribe.one_pass_extractor import (OnePassStats, make_one_pass_get_data, one_pass_text_features,
                                                    read_form_get_data, text_infra_method)
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
        if config.cache_folder:
            self.cache_folder = Path(config.cache_folder)
        else:
            from brainrl.brain.pipeline import default_cache_dir

            self.cache_folder = default_cache_dir() / "tribe"
        self.audio_dir = self.cache_folder / "brainrl-audio"
        # TRIBE's own feature cache, one per text-feature mode and dtype: its uids (text + context, audio
        # path + offset + duration) do not say how a feature was computed, so these must not share it
        self.tribe_cache = self.cache_folder / f"tribe-{config.text_features}-{config.audio_features}-{config.precision_label}"
        self.text_stats = OnePassStats()
        self.audio_stats = BatchedAudioStats()
        self.direct_stats = DirectStats()
        self._model: Any = None
        self._background: Any = None  # the direct path's audio-feature thread (created on first use)
        self.load_seconds: float | None = None
        self.cache_clears = 0  # times the feature cache passed cache_max_gb and was emptied

    # -- loading -------------------------------------------------------------------------------------
    def load(self) -> "TribeEngine":
        if self._model is not None:
            return self
        started = time.perf_counter()
        from tribev2.demo_utils import TribeModel

        folder = resolve_checkpoint(self.config)
        with self._on_device():
            self._model = TribeModel.from_pretrained(
                folder,
                checkpoint_name=self.config.checkpoint_name,
                # cache_max_gb=0 (nothing reused): TRIBE's feature cache stays in RAM (exca keeps it there
                # without a folder), so no feature is written to disk, and no sqlite claim is made per item
                cache_folder=None if self.config.cache_max_gb == 0 else str(self.tribe_cache),
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

    def _on_device(self):
        """``device="cuda:N"``: TRIBE's extractors only take "cuda", which then means GPU N."""
        index = self.config.cuda_index
        if index is None:
            return contextlib.nullcontext()
        import torch

        return torch.cuda.device(index)

    def _load_feature_models(self) -> None:
        """Load the text and audio models now, so the first predict does not pay for it and they stay
        resident: in float32 for the reference (transformers 5 loads Llama in bf16 by default), in bfloat16
        for ``dtype="bfloat16"`` (but the parts in ``float32_parts``). Their outputs, and the fusion model's,
        are handed on as float32: TRIBE and neuralset call ``.numpy()`` on them, which bf16 tensors do not
        support."""
        import torch

        def dtype_of(part: str) -> Any:
            return torch.float32 if self.config.part_dtype(part) == "float32" else torch.bfloat16

        data = getattr(self._model, "data", None)
        for name, part in (("text_feature", "text"), ("audio_feature", "audio")):
            extractor = getattr(data, name, None)
            module = getattr(extractor, "model", None) if extractor is not None else None
            if isinstance(module, torch.nn.Module):
                dtype = dtype_of(part)
                module.to(dtype)
                if dtype != torch.float32:  # w2v-bert gets float32 filter-bank features
                    module.register_forward_pre_hook(inputs_to(dtype), with_kwargs=True)
                module.register_forward_hook(float32_outputs)
        brain = getattr(self._model, "_model", None)
        if isinstance(brain, torch.nn.Module):
            dtype = dtype_of("fusion")
            if dtype != torch.float32:
                # only the fusion model runs under autocast: around the whole predict, CPU autocast would
                # also turn the audio resampling (julius, a conv1d) into bf16 before the numpy filter bank
                device_type = "cuda" if self.config.device.startswith("cuda") else "cpu"
                brain.forward = torch.autocast(device_type=device_type, dtype=dtype)(brain.forward)
            brain.register_forward_hook(float32_outputs)

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

    def _audio_feature_mode(self):
        """Batched filter bank + w2v-bert inside TRIBE's audio extractor (batched_audio.py), or TRIBE's own."""
        extractor = getattr(getattr(self._model, "data", None), "audio_feature", None)
        if self.config.audio_features != "batched" or extractor is None:
            return contextlib.nullcontext()
        return batched_audio_features(extractor, self.config.audio_batch_size, self.audio_stats)

    # -- TRIBE's feature cache ---------------------------------------------------------------------------
    def cache_bytes(self) -> int:
        """Bytes on disk in TRIBE's feature cache and brainrl's audio copies."""
        return sum(f.stat().st_size for folder in (self.tribe_cache, self.audio_dir) if folder.exists()
                   for f in folder.rglob("*") if f.is_file())

    def clear_cache(self) -> None:
        """Empty TRIBE's feature cache (disk, and the copies exca keeps in RAM) and the audio copies."""
        data = getattr(self._model, "data", None)
        for name in ("text_feature", "audio_feature", "video_feature", "image_feature"):
            infra = getattr(getattr(data, name, None), "infra", None)
            if infra is not None:
                forget_infra_cache(infra)
        for folder in (self.tribe_cache, self.audio_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.tribe_cache.mkdir(parents=True, exist_ok=True)
        self.cache_clears += 1

    def _enforce_cache_cap(self) -> None:
        limit = self.config.cache_max_gb * 2**30
        # cache_max_gb=0 on the tribe path: exca's RAM copies are dropped after every call; the direct path has
        # no exca cache, so only files (if any were written) are removed
        size = self.cache_bytes() if limit > 0 or self.config.predict_path == "direct" else 1
        if size > limit:
            log.info("TRIBE feature cache at %.2f GB > cache_max_gb=%s: emptying it", size / 2**30,
                     self.config.cache_max_gb)
            self.clear_cache()

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
            self._enforce_cache_cap()
        return results

    def _predict_chunk(self, stimuli: list[Stimulus]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(stimuli)
        ready: list[int] = []
        audio_paths: dict[int, Path] = {}
        # the direct path with batched audio reads the samples from memory: nothing is written
        write = content_audio_target if self.in_memory_audio else content_audio_path
        for index, stimulus in enumerate(stimuli):
            try:
                check_speech_path(stimulus, self.config.speech_path)
                audio_paths[index] = write(stimulus, self.audio_dir)
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

    def _predict_tribe(self, stimuli: list[Stimulus], audio_paths: list[Path], timelines: list[str]) -> tuple[Any, list]:
        """TRIBE v2's own ``TribeModel.predict`` on an events DataFrame of the stimuli."""
        # path A (reference speech) and contexts="tribe": TRIBE's own transforms (spaCy sentences,
        # .capitalize(), AddContextToWords, RemoveMissing, audio chunking) rebuild the contexts from the Word rows
        tribe_transforms = self.config.speech_path == "reference" or self.config.contexts == "tribe"
        events = build_events(
            stimuli,
            timelines,
            audio_paths,
            with_context=not tribe_transforms,
            max_context_words=self.config.max_context_words,
        )
        if tribe_transforms:
            from tribev2.demo_utils import get_audio_and_text_events

            events = get_audio_and_text_events(events)
        import torch

        with (self._on_device(), self._resident_extractors(), self._text_feature_mode(), self._audio_feature_mode(),
              torch.inference_mode()):
            return self._model.predict(events=events, verbose=False)

    def _predict_direct(self, stimuli: list[Stimulus], audio_paths: list[Path], timelines: list[str]) -> tuple[Any, list]:
        """The same predictions from the tensors TRIBE's data loader would build, without its DataFrame (direct.py)."""
        import torch

        if self._background is None:  # one thread for the audio features, beside the word events and text features
            from concurrent.futures import ThreadPoolExecutor

            self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainrl-tribe-audio")
        predictor = DirectPredictor(self._model, self._feature_method("text"), self._feature_method("audio"),
                                    self.direct_stats, background=self._background, context=self._thread_context)
        with self._on_device(), torch.inference_mode():
            device = self.config.device if self.config.device.startswith("cuda") else "cpu"
            if not self.in_memory_audio:
                return predictor.predict(stimuli, timelines, audio_paths, self.config.max_context_words)
            # the samples are made in the audio thread, while this one builds the events and text features
            return predictor.predict(stimuli, timelines, audio_paths, self.config.max_context_words,
                                     [tribe_audio_format(s) for s in stimuli],
                                     functools.partial(tribe_audio_batch, stimuli, device))

    @contextlib.contextmanager
    def _thread_context(self) -> Iterator[None]:
        """What ``_predict_direct`` enters, for another thread (the CUDA device and inference mode are per thread)."""
        import torch

        with self._on_device(), torch.inference_mode():
            yield

    @property
    def in_memory_audio(self) -> bool:
        """The direct path with batched audio features takes the samples TRIBE would read from memory (where the
        batched path can stand in for the audio extractor; otherwise files are written for TRIBE's own code)."""
        if self.config.predict_path != "direct" or self.config.audio_features != "batched":
            return False
        extractor = getattr(getattr(self._model, "data", None), "audio_feature", None)
        return extractor is not None and batched_audio_unsupported(extractor) is None

    def _feature_method(self, modality: str) -> Any:
        """The computation exca would run for a modality's missing items: TRIBE's undecorated ``_get_data``, or
        brainrl's one-pass text / batched audio stand-in for it, as configured; features come in the form
        ``_get_timed_arrays`` reads them (``read_form``: layer groups averaged). None without that extractor."""
        extractor = getattr(getattr(self._model, "data", None), f"{modality}_feature", None)
        if extractor is None:
            return None
        original = text_infra_method(extractor).method
        if modality == "text":  # features in the form the extractor reads them (nothing is cached in between)
            if self.config.text_features == "one-pass":
                return make_one_pass_get_data(original, self.config.text_batch_size, self.text_stats, read_forms=True)
            return read_form_get_data(original)
        if modality == "audio":  # layers in their read form too
            if self.config.audio_features == "batched":
                return make_batched_get_data(original, self.config.audio_batch_size, self.audio_stats, read_forms=True)
            return read_form_timed_arrays(original)
        return original

    @contextlib.contextmanager
    def _matmul_precision(self) -> Iterator[None]:
        """float32 matrix products in the configured precision for the call (TF32 or not), restored after: the
        flag is process-wide, so the audio thread, which runs inside the call, sees the same."""
        import torch

        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = self.config.matmul_precision == "high"
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before

    def _run(self, stimuli: list[Stimulus], audio_paths: list[Path], indices: list[int]) -> list[ItemResult]:
        timelines = [timeline_id(i, s) for i, s in zip(indices, stimuli)]
        with self._matmul_precision():
            if self.config.predict_path == "direct":
                preds, segments = self._predict_direct(stimuli, audio_paths, timelines)
            else:
                preds, segments = self._predict_tribe(stimuli, audio_paths, timelines)
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


def float32_outputs(module: Any, inputs: Any, output: Any) -> Any:
    """Forward hook: every floating tensor the module returns (alone, in a tuple or in a transformers
    ``ModelOutput``, hidden-state tuples included) becomes float32; others pass through."""
    import torch

    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
        if isinstance(value, tuple) and not hasattr(value, "keys"):
            return tuple(cast(v) for v in value)
        return value

    if hasattr(output, "keys") and hasattr(output, "__setitem__"):  # transformers ModelOutput (an OrderedDict)
        for key in list(output.keys()):
            output[key] = cast(output[key])
        return output
    return cast(output)


def inputs_to(dtype: Any):
    """A forward pre-hook (``with_kwargs=True``) casting the module's floating-point inputs to ``dtype``."""
    import torch

    def cast(value: Any) -> Any:
        return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value

    def hook(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    return hook


def forget_infra_cache(infra: Any) -> None:
    """Make an exca ``MapInfra`` drop its cache dict (and the items it keeps in RAM), so the next call
    reads a fresh, empty folder. Infras without a cache dict (a TaskInfra, a test double) are left alone."""
    state = getattr(infra, "__pydantic_private__", {}) or {}
    state = state.get("_state") if isinstance(state, dict) else None
    if state is None:
        return  # not an exca infra that caches (a test double, or a TaskInfra)
    if not hasattr(state, "cache_dict"):
        return
    state.cache_dict = None
    if hasattr(state, "checked_configs"):
        state.checked_configs = False
