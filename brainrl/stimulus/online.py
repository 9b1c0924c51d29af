"""Reference speech path: gTTS audio, word times from WhisperX forced alignment (TRIBE v2's own recipe).

As in TRIBE, the audio is gTTS's own MP3 (not a re-encoded 16 kHz WAV) and English words are aligned with
``WAV2VEC2_ASR_LARGE_LV60K_960H`` (TRIBE's ``--align_model``), not WhisperX's default base aligner.

It needs network access (gTTS calls Google's TTS endpoint, WhisperX fetches its weights on first use),
so it is not the default; use it to check results against the reference (docs/speech.md). Unlike the
reference, which runs ``uvx whisperx`` in a new process per text and reloads ~3 GB of weights each
time, the models are loaded once per process and shared by every engine instance; and the words are
the known text's tokens (not the ASR transcript), with untimed ones (numerals) interpolated, not dropped.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from brainrl.stimulus.base import MAX_CHARS, MAX_SECONDS, MAX_WORDS, SpeechEngine, Stimulus
from brainrl.stimulus.timing import build_words, token_spans

log = logging.getLogger(__name__)

#: Bumped whenever the mapping from aligned words to text tokens changes (part of ``version``).
TIMING_VERSION = "t1"
WHISPERX_SAMPLE_RATE = 16_000  # whisperx.load_audio resamples to this (what the aligner hears)
#: TRIBE v2's aligner (``--align_model`` of its WhisperX call), which it passes for English only.
TRIBE_ALIGN_MODEL = "WAV2VEC2_ASR_LARGE_LV60K_960H"
_INSTALL_HINT = "pip install 'brainrl[online]'"
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def require(module: str) -> Any:
    """Import an optional dependency of the online extra, or fail saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"The gtts-whisperx speech engine needs the {module!r} package, which is not installed. "
            f"Install the online extra: {_INSTALL_HINT}"
        ) from error


def _package_version(distribution: str, module: Any) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def _normalise(token: str) -> str:
    """Form used to match text tokens with ASR words: lower case, letters and digits only."""
    return _NON_WORD.sub("", token.lower())


def map_aligned_words(text: str, aligned_words: Sequence[dict]) -> tuple[list, list, list]:
    """Per-token ``(spans, starts, ends)`` of ``text`` from WhisperX's aligned words.

    The ASR transcript can differ from the text (spelling, numbers written out, merged words), so the two
    token sequences are matched with ``difflib``. Equal tokens take the word's times; a differing stretch
    shares the times of its ASR words, spread over its tokens by length; tokens with no timed counterpart
    get ``None`` (interpolated later). Words without "start" (WhisperX cannot align numerals) give none.
    """
    spans = token_spans(text)
    tokens = [_normalise(text[a:b]) for a, b in spans]
    heard = [_normalise(str(w.get("word", ""))) for w in aligned_words]
    starts: list[float | None] = [None] * len(spans)
    ends: list[float | None] = [None] * len(spans)

    def timed(word: dict) -> bool:
        return word.get("start") is not None and np.isfinite(word["start"])

    matcher = difflib.SequenceMatcher(a=tokens, b=heard, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if timed(aligned_words[j]):
                    starts[i] = float(aligned_words[j]["start"])
                    end = aligned_words[j].get("end")
                    ends[i] = float(end) if end is not None and np.isfinite(end) else None
        elif op == "replace":
            times = [aligned_words[j] for j in range(j1, j2) if timed(aligned_words[j])]
            if not times:
                continue
            lo = min(float(w["start"]) for w in times)
            hi = max(float(w.get("end") or w["start"]) for w in times)
            weights = np.array([max(len(tokens[i]), 1) for i in range(i1, i2)], dtype=float)
            edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
            for k, i in enumerate(range(i1, i2)):
                starts[i], ends[i] = float(edges[k]), float(edges[k + 1])
    return spans, starts, ends


class GTTSWhisperXEngine(SpeechEngine):
    """gTTS speech + WhisperX word alignment. Models are cached per process (class level)."""

    name = "gtts-whisperx"

    _asr_models: ClassVar[dict[tuple, Any]] = {}
    _align_models: ClassVar[dict[tuple, tuple[Any, dict]]] = {}
    _models_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        out_dir: str | Path | None = None,
        max_words: int = MAX_WORDS,
        keep_waveform: bool = True,
        lang: str = "en",
        tld: str = "com",
        whisper_arch: str = "large-v3",
        device: str | None = None,
        compute_type: str | None = None,
        batch_size: int = 16,
        align_model: str | None = None,
        max_chars: int = MAX_CHARS,
        max_seconds: float = MAX_SECONDS,
        unspeakable: str = "fail",
    ):
        super().__init__(out_dir=out_dir, max_words=max_words, keep_waveform=keep_waveform, max_chars=max_chars,
                         max_seconds=max_seconds, unspeakable=unspeakable)
        self._gtts = require("gtts")
        self._whisperx = require("whisperx")
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.lang = lang
        self.tld = tld
        self.whisper_arch = whisper_arch
        self.device = device
        # float16 only runs on CUDA: the reference hard-codes it and so cannot run on CPU (tribev2.md 1.2)
        self.compute_type = compute_type or ("float16" if device.startswith("cuda") else "int8")
        self.batch_size = batch_size
        #: None: TRIBE's choice, its large aligner for English and WhisperX's default for other languages
        self.align_model = align_model

        self._version = (
            f"gtts-{_package_version('gTTS', self._gtts)}+tld-{self.tld}+mp3"
            f"+whisperx-{_package_version('whisperx', self._whisperx)}+{self.whisper_arch}+{self.compute_type}"
            f"+{self.align_model_name(self.lang) or 'default-align'}+{TIMING_VERSION}"
        )

    @property
    def version(self) -> str:
        return self._version

    @property
    def voice(self) -> str:
        return f"gtts-{self.lang}"

    @property
    def language(self) -> str:
        return self.lang

    def align_model_name(self, language: str) -> str | None:
        """The aligner asked of WhisperX for ``language``: the engine's, else TRIBE's for English, else
        None (WhisperX's default for that language; TRIBE's own call breaks there, tribev2.md 1.2)."""
        if self.align_model is not None:
            return self.align_model
        return TRIBE_ALIGN_MODEL if language == "en" else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "audio_format": "gtts-mp3", "align_model": self.align_model_name(self.lang),
                "whisper_arch": self.whisper_arch, "compute_type": self.compute_type}

    # models ---------------------------------------------------------------------------------------
    def asr_model(self) -> Any:
        """The Whisper pipeline for this engine's arch/device/compute type, loaded once per process."""
        key = (self.whisper_arch, self.device, self.compute_type, self.lang)
        with self._models_lock:
            if key not in self._asr_models:
                log.info("Loading WhisperX %s on %s (%s)", self.whisper_arch, self.device, self.compute_type)
                self._asr_models[key] = self._whisperx.load_model(
                    self.whisper_arch, self.device, compute_type=self.compute_type, language=self.lang
                )
            return self._asr_models[key]

    def alignment_model(self, language: str) -> tuple[Any, dict]:
        """``(model, metadata)`` of the wav2vec2 aligner for ``language``, loaded once per process."""
        model_name = self.align_model_name(language)
        key = (language, self.device, model_name)
        with self._models_lock:
            if key not in self._align_models:
                log.info("Loading the WhisperX alignment model %s for %r on %s", model_name or "(default)",
                         language, self.device)
                self._align_models[key] = self._whisperx.load_align_model(
                    language_code=language, device=self.device, model_name=model_name
                )
            return self._align_models[key]

    @classmethod
    def clear_model_cache(cls) -> None:
        """Forget the loaded models (frees their memory once nothing else holds them)."""
        with cls._models_lock:
            cls._asr_models.clear()
            cls._align_models.clear()

    # synthesis ------------------------------------------------------------------------------------
    def _synthesize_one(self, text: str) -> Stimulus:
        import soundfile

        stim = Stimulus(text, [], None, 0, 0.0, self.name, self.version, self.voice)
        key = stim.key()
        # the MP3 is the stimulus audio, as in TRIBE: kept in out_dir when there is one, else it lives only
        # as long as this call and the stimulus keeps its decoded samples in memory
        with tempfile.TemporaryDirectory(prefix="brainrl-gtts-") as scratch:
            mp3_path = (self.out_dir or Path(scratch)) / f"{key}.mp3"
            try:
                self._gtts.gTTS(text=text, lang=self.lang, tld=self.tld).save(str(mp3_path))
            except Exception as error:  # gTTSError, requests errors: name the usual cause
                raise RuntimeError(
                    f"gTTS could not synthesise the text ({error}); it needs network access to Google's TTS "
                    f"endpoint. The offline default engine is 'espeak'."
                ) from error
            heard = np.asarray(self._whisperx.load_audio(str(mp3_path)), dtype=np.float32)  # 16 kHz, aligner only
            data, rate = soundfile.read(str(mp3_path), dtype="float32", always_2d=True)  # what TRIBE reads
        samples = data.mean(axis=1)
        stim.sample_rate = int(rate)
        stim.duration = len(samples) / rate
        words = self.align(text, heard)
        spans, starts, ends = map_aligned_words(text, words)
        stim.words = build_words(text, starts, ends, stim.duration, spans)
        stim.audio_path = mp3_path if self.out_dir is not None else None
        stim.waveform = samples if self.keep_waveform else None
        return stim

    def align(self, text: str, audio: np.ndarray) -> list[dict]:
        """WhisperX transcription then forced alignment: the aligned words, in order."""
        result = self.asr_model().transcribe(audio, batch_size=self.batch_size, language=self.lang)
        if not result.get("segments"):
            log.warning("WhisperX heard no speech in the gTTS audio of %r; word times are interpolated.", text[:60])
            return []
        model, metadata = self.alignment_model(result.get("language") or self.lang)
        aligned = self._whisperx.align(
            result["segments"], model, metadata, audio, self.device, return_char_alignments=False
        )
        if "word_segments" in aligned:
            return list(aligned["word_segments"])
        return [word for segment in aligned["segments"] for word in segment.get("words", [])]

