"""Default speech engine: espeak-ng through ctypes, with exact word times from its synthesis events.

Why espeak-ng: it ships as a 10 MB wheel (``espeakng-loader``), needs no network, synthesises about 500x
faster than real time and reports when each word starts while it speaks, so word timings are exact
rather than recovered by an aligner (docs/speech.md). The library has global state, so every call goes
through one module lock, and each text is spoken by a freshly loaded copy so that the output does not
depend on what was spoken before (``_EspeakLibrary``); ``workers=N`` runs N processes in parallel.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import logging
import os
import shutil
import tempfile
import threading
from bisect import bisect_left, bisect_right
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np

from brainrl.registry import unknown_name_error
from brainrl.stimulus.base import MAX_CHARS, MAX_SECONDS, MAX_WORDS, EmptyTextError, SpeechEngine, Stimulus
from brainrl.stimulus.timing import build_words, token_of_char, token_spans

log = logging.getLogger(__name__)

#: Bumped whenever the way word timings are derived from events changes (part of ``version``).
TIMING_VERSION = "t1"

# espeak-ng constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM_RATE = 1
_BUFFER_MS = 500  # audio per callback: larger buffers mean fewer Python callbacks


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` (40 bytes on 64-bit); ``id`` is the union read as ``char[8]`` (phoneme names)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset in the UTF-8 text
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index in the whole utterance
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent)
)


@dataclass
class RawSpeech:
    """What espeak reports for one text: int16 samples, WORD events and PHONEME onsets."""

    samples: np.ndarray  # int16 mono
    sample_rate: int
    word_events: list[tuple[int, int]]  # (0-based character offset, sample index)
    phonemes: list[tuple[int, bool]]  # (onset sample, is a pause phoneme such as "_" or "_:")


class _EspeakLibrary:
    """The process's libespeak-ng. Use ``espeak_library()``; call ``speak`` under ``_LOCK``.

    espeak-ng keeps state from one utterance to the next in C statics (the pitch-flutter phase in
    wavegen.c, which changes period lengths, and noise/filter state): the same text spoken twice gives
    different samples and word times that differ by a few samples, and ``espeak_Terminate`` +
    ``espeak_Initialize`` do not reset them. So every text is spoken by a freshly loaded library: a private
    copy of the .so (so nobody else in the process holds it open) is dlopen-ed, initialised, used and
    dlclose-d, which costs about 2 ms and makes the output a pure function of (text, voice, rate).
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:  # pragma: no cover - a core dependency
            raise ImportError("The espeak engine needs espeakng-loader: pip install espeakng-loader") from error
        self.source_path = Path(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())
        _remove_orphaned_copies()
        self._private_dir = Path(tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}{os.getpid()}-"))
        self.library_path = self._private_dir / self.source_path.name
        shutil.copyfile(self.source_path, self.library_path)
        atexit.register(shutil.rmtree, self._private_dir, True)
        self._callback = _SynthCallback(self._collect)  # referenced for as long as any library may call it
        self._chunks: list[bytes] = []
        self._words: list[tuple[int, int]] = []
        self._phonemes: list[tuple[int, bool]] = []
        lib = self._load()
        try:
            lib.espeak_Info.restype = ctypes.c_char_p
            lib.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
            self.version = lib.espeak_Info(None).decode()
        finally:
            self._unload(lib)

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(str(self.library_path))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]  # fmt: skip
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, str(self.data_path).encode(), _INITIALIZE_PHONEME_EVENTS
        )
        if sample_rate <= 0:
            self._unload(lib, terminate=False)
            raise RuntimeError(f"espeak_Initialize failed ({sample_rate}) with data at {self.data_path}.")
        self.sample_rate = sample_rate
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    @staticmethod
    def _unload(lib: ctypes.CDLL, terminate: bool = True) -> None:
        if terminate:
            lib.espeak_Terminate()
        _dlclose(lib._handle)

    def _collect(self, wav, n_samples, events) -> int:
        if n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_WORD:
                self._words.append((event.text_position - 1, event.sample))
            elif event.type == _EVENT_PHONEME:
                self._phonemes.append((event.sample, event.id.startswith(b"_")))
            i += 1
        return 0  # 0 = go on

    def _select(self, lib: ctypes.CDLL, voice: str, rate: int) -> None:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise unknown_name_error("espeak voice", voice, available_voices(self.data_path))
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)

    def check_voice(self, voice: str, rate: int) -> None:
        """Raise a KeyError naming the known voices if espeak-ng cannot load ``voice``."""
        lib = self._load()
        try:
            self._select(lib, voice, rate)
        finally:
            self._unload(lib)

    def speak(self, text: str, voice: str, rate: int) -> RawSpeech:
        lib = self._load()
        try:
            self._select(lib, voice, rate)
            self._chunks, self._words, self._phonemes = [], [], []
            data = text.encode("utf-8")
            buffer = ctypes.create_string_buffer(data)
            status = lib.espeak_Synth(buffer, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
        finally:
            self._unload(lib)
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status} for a text of {len(text)} characters.")
        samples = np.frombuffer(b"".join(self._chunks), dtype=np.int16).copy()
        return RawSpeech(samples, self.sample_rate, self._words, self._phonemes)


_PRIVATE_PREFIX = "brainrl-espeak-"


def _remove_orphaned_copies() -> None:
    """Private library copies left in the temp folder by processes that were killed (their atexit never
    ran): a folder ``brainrl-espeak-<pid>-*`` whose process no longer exists is removed."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PRIVATE_PREFIX}*"):
        pid = folder.name[len(_PRIVATE_PREFIX):].split("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or someone else's process we may not signal)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (PermissionError, OverflowError):
            continue


def _dlclose(handle: int) -> None:
    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary")
    close(handle)


_LOCK = threading.Lock()
_LIBRARY: _EspeakLibrary | None = None


def espeak_library() -> _EspeakLibrary:
    """The process's espeak-ng (its private copy, version and sample rate: 22,050 Hz)."""
    global _LIBRARY
    with _LOCK:
        if _LIBRARY is None:
            _LIBRARY = _EspeakLibrary()
        return _LIBRARY


@lru_cache(maxsize=4)
def available_voices(data_path: str | Path) -> list[str]:
    """Language voice names espeak-ng knows (files under ``espeak-ng-data/lang``), for error messages;
    espeak also takes variants such as ``en-us+f3``."""
    lang = Path(data_path) / "lang"
    return sorted({p.name.lower() for p in lang.rglob("*") if p.is_file()}) if lang.is_dir() else []


def speak(text: str, voice: str = "en-us", rate: int = 175) -> RawSpeech:
    """Synthesise ``text`` with the process-wide library (thread-safe)."""
    library = espeak_library()
    with _LOCK:
        return library.speak(text, voice, rate)


def word_timings(text: str, raw: RawSpeech) -> tuple[list[tuple[int, int]], list[float | None], list[float | None]]:
    """Per-token ``(spans, starts, ends)`` in seconds from espeak's events, ``None`` where unknown.

    A token's start is its first WORD event (numbers such as "2025" raise several events from one token).
    Its end is the onset of the pause phoneme that follows its last sounding phoneme, when that comes
    before the next word; otherwise the word runs on until the next one starts.
    """
    spans = token_spans(text)
    sr = float(raw.sample_rate)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    char_starts = [start for start, _ in spans]
    for char_index, sample in raw.word_events:
        token = token_of_char(char_starts, char_index)
        first.setdefault(token, sample)
        last[token] = sample
    starts: list[float | None] = [first[i] / sr if i in first else None for i in range(len(spans))]
    ends: list[float | None] = [None] * len(spans)
    onsets = [sample for sample, _ in raw.phonemes]
    timed = sorted(first)
    for k, token in enumerate(timed):
        next_start = first[timed[k + 1]] if k + 1 < len(timed) else len(raw.samples)
        ends[token] = _sound_end(raw.phonemes, onsets, last[token], next_start, sr)
    return spans, starts, ends


def _sound_end(phonemes, onsets, word_sample: int, next_start: int, sr: float) -> float | None:
    """Onset of the first pause after the last sounding phoneme in ``[word_sample, next_start)``."""
    lo, hi = bisect_left(onsets, word_sample), bisect_left(onsets, next_start)
    last_sound = next((i for i in range(hi - 1, lo - 1, -1) if not phonemes[i][1]), None)
    if last_sound is None:
        return None
    stop = bisect_right(onsets, next_start)  # pauses that start exactly when the next word does still count
    pause = next((i for i in range(last_sound + 1, stop) if phonemes[i][1]), None)
    return onsets[pause] / sr if pause is not None and onsets[pause] > onsets[last_sound] else None


@dataclass(frozen=True)
class _WorkerConfig:
    out_dir: str | None
    keep_waveform: bool
    voice: str
    rate: int
    max_seconds: float


_WORKER_ENGINES: dict[_WorkerConfig, "EspeakEngine"] = {}


def _synthesize_in_worker(config: _WorkerConfig, clean: str, truncated: bool) -> Stimulus:
    """Runs in a pool process: one engine (and one espeak) per process and configuration."""
    engine = _WORKER_ENGINES.get(config)
    if engine is None:
        engine = EspeakEngine(config.out_dir, keep_waveform=config.keep_waveform, voice=config.voice, rate=config.rate,
                              max_seconds=config.max_seconds)
        _WORKER_ENGINES[config] = engine
    return engine.finish(engine._synthesize_one(clean), truncated)


class EspeakEngine(SpeechEngine):
    """espeak-ng voice, exact word starts from WORD events, ends from pause phonemes; 16-bit WAV files."""

    name = "espeak"

    def __init__(
        self,
        out_dir: str | Path | None = None,
        max_words: int = MAX_WORDS,
        keep_waveform: bool = True,
        voice: str = "en-us",
        rate: int = 175,
        workers: int = 1,
        max_chars: int = MAX_CHARS,
        max_seconds: float = MAX_SECONDS,
        unspeakable: str = "fail",
    ):
        super().__init__(out_dir=out_dir, max_words=max_words, keep_waveform=keep_waveform, max_chars=max_chars,
                         max_seconds=max_seconds, unspeakable=unspeakable)
        if not 80 <= int(rate) <= 450:
            raise ValueError(f"espeak rate must be 80-450 words per minute, got {rate}.")
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}.")
        library = espeak_library()
        with _LOCK:
            library.check_voice(voice, int(rate))  # fails early, naming the known voices
        self._voice = voice
        self.rate = int(rate)
        self.workers = int(workers)
        self._library_version = library.version
        self._pool: ProcessPoolExecutor | None = None

    @property
    def version(self) -> str:
        return f"espeak-ng-{self._library_version}+{self._voice}+{self.rate}wpm+{TIMING_VERSION}"

    @property
    def voice(self) -> str:
        return self._voice

    def _synthesize_one(self, text: str) -> Stimulus:
        raw = speak(text, self._voice, self.rate)
        if not raw.word_events or len(raw.samples) == 0:
            raise EmptyTextError(f"espeak-ng speaks no word for {text[:60]!r} (only punctuation or symbols).")
        spans, starts, ends = word_timings(text, raw)
        duration = len(raw.samples) / raw.sample_rate
        words = build_words(text, starts, ends, duration, spans)
        waveform = raw.samples.astype(np.float32) / 32768.0
        stim = Stimulus(
            text=text,
            words=words,
            audio_path=None,
            sample_rate=raw.sample_rate,
            duration=duration,
            engine=self.name,
            engine_version=self.version,
            voice=self._voice,
            waveform=waveform if self.keep_waveform else None,
        )
        stim.audio_path = self._write_wav(stim.key(), raw.samples, raw.sample_rate)
        return stim

    def synthesize(self, texts: Sequence[str]) -> list[Stimulus]:
        """Texts -> stimuli in order; with ``workers > 1`` batches are spread over worker processes."""
        if self.workers == 1 or len(texts) < 2:
            return super().synthesize(texts)
        cleaned = []
        for index, text in enumerate(texts):
            try:
                cleaned.append(self.prepare(text))
            except ValueError as error:  # EmptyTextError, UnspeakableTextError: say which text
                raise type(error)(f"text {index}: {error}") from error
        config = _WorkerConfig(str(self.out_dir) if self.out_dir else None, self.keep_waveform, self._voice, self.rate,
                               self.max_seconds)
        futures = [self._worker_pool().submit(_synthesize_in_worker, config, c, t) for c, t in cleaned]
        return [f.result() for f in futures]

    def _worker_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:  # "spawn": no inherited espeak or torch thread state in the workers
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))
        return self._pool

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "EspeakEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None  # pools do not travel; a copy starts its own
        return state

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
