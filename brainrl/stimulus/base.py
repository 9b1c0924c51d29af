"""What a brain model hears: the text, its words with timings, and the audio file."""

from __future__ import annotations

import abc
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import content_hash
from brainrl.registry import Registry

#: Longest text (in words) turned into speech. Longer texts are cut at a word boundary and the cut is
#: recorded in ``Stimulus.truncated``: ~300 words is ~2 min of speech, past which TRIBE v2's
#: reference path mis-chunks audio (tribev2.md section 1.4) and RL completions never reach.
MAX_WORDS = 300

_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\ufeff]")


@dataclass(frozen=True)
class Word:
    """One spoken word: its text as written, where it sits in the stimulus text, and when it is heard."""

    text: str
    start: float  # seconds from the start of the audio
    duration: float  # seconds
    char_start: int = -1  # offset of the word in Stimulus.text (-1 if unknown)
    char_end: int = -1

    @property
    def stop(self) -> float:
        return self.start + self.duration


@dataclass
class Stimulus:
    """A text turned into speech. ``words`` are monotonic and lie inside ``[0, duration]``."""

    text: str
    words: list[Word]
    audio_path: Path | None
    sample_rate: int
    duration: float  # seconds of audio
    engine: str  # speech engine id, e.g. "espeak-ng"
    engine_version: str
    voice: str = ""
    truncated: bool = False
    waveform: np.ndarray | None = field(default=None, repr=False, compare=False)  # float32 mono, optional

    def key(self) -> str:
        """Content key: everything about the speech that can change a brain model's output."""
        return content_hash(
            {"text": self.text, "engine": self.engine, "engine_version": self.engine_version, "voice": self.voice}
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "speech_engine": self.engine,
            "speech_engine_version": self.engine_version,
            "voice": self.voice,
            "audio_seconds": round(self.duration, 3),
            "n_words": len(self.words),
            "truncated": self.truncated,
        }

    def load_waveform(self) -> np.ndarray:
        """Mono float32 samples in [-1, 1], read from ``audio_path`` unless kept in memory."""
        if self.waveform is not None:
            return self.waveform
        if self.audio_path is None:
            raise ValueError("This stimulus has neither a waveform in memory nor an audio file.")
        import soundfile

        data, _ = soundfile.read(str(self.audio_path), dtype="float32", always_2d=True)
        return data.mean(axis=1)


def clean_text(text: str, max_words: int = MAX_WORDS) -> tuple[str, bool]:
    """Normalise a completion for speech: NFC, control and zero-width characters to spaces, collapsed
    whitespace, and at most ``max_words`` words. Returns ``(clean, truncated)``."""
    if not isinstance(text, str):
        raise TypeError(f"Expected a str completion, got {type(text).__name__}.")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    words = text.split(" ")
    if max_words and len(words) > max_words:
        return " ".join(words[:max_words]), True
    return text, False


class EmptyTextError(ValueError):
    """Raised for a text with nothing to speak (empty, whitespace or control characters only)."""


class SpeechEngine(abc.ABC):
    """Turns texts into stimuli. Subclasses implement ``_synthesize_one`` or override ``synthesize``."""

    #: registry name, also recorded in provenance and cache keys
    name: str = "speech"

    def __init__(self, out_dir: str | Path | None = None, max_words: int = MAX_WORDS, keep_waveform: bool = True):
        import tempfile

        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="brainrl-speech-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_words = max_words
        self.keep_waveform = keep_waveform

    @property
    @abc.abstractmethod
    def version(self) -> str:
        """Engine version string (library and voice), part of every cache key."""

    @property
    def voice(self) -> str:
        return ""

    def synthesize(self, texts: Sequence[str]) -> list[Stimulus]:
        """Texts -> stimuli, in order. Raises ``EmptyTextError`` for a text with nothing to speak."""
        return [self.synthesize_one(t) for t in texts]

    def synthesize_safe(self, texts: Sequence[str]) -> list[Stimulus | Exception]:
        """Like ``synthesize`` but an item that fails comes back as its exception, so one bad text
        loses only itself. Tries the batch path first and falls back to one text at a time."""
        try:
            return list(self.synthesize(texts))
        except Exception:
            pass
        out: list[Stimulus | Exception] = []
        for text in texts:
            try:
                out.append(self.synthesize_one(text))
            except Exception as err:
                out.append(err)
        return out

    def synthesize_one(self, text: str) -> Stimulus:
        clean, truncated = clean_text(text, self.max_words)
        if not clean.strip():
            raise EmptyTextError("Nothing to speak: the text is empty or only whitespace/control characters.")
        stim = self._synthesize_one(clean)
        stim.truncated = truncated
        return stim

    @abc.abstractmethod
    def _synthesize_one(self, text: str) -> Stimulus:
        """Synthesize one clean, non-empty text."""

    def _write_wav(self, key: str, samples: np.ndarray, sample_rate: int) -> Path:
        """A 16-bit WAV named by the stimulus key in ``out_dir`` (content-addressed, so reruns overwrite)."""
        import soundfile

        path = self.out_dir / f"{key}.wav"
        soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
        return path

    def describe(self) -> dict[str, Any]:
        return {"speech_engine": self.name, "speech_engine_version": self.version, "voice": self.voice}


SPEECH_ENGINES: Registry[SpeechEngine] = Registry("speech engine")
