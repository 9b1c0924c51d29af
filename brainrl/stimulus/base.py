"""What a brain model hears: the text, its words with timings, and the audio file."""

from __future__ import annotations

import abc
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_string  # a str as JSON, as stable_json writes it
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import content_hash
from brainrl.registry import Registry

#: Longest text (in words) turned into speech. Longer texts are cut at a word boundary and the cut is
#: recorded in ``Stimulus.truncated``: ~300 words is ~2 min of speech, past which TRIBE v2's
#: reference path mis-chunks audio (tribev2.md section 1.4) and RL completions never reach.
MAX_WORDS = 300
#: Longest text in characters (300 words of ~7 characters, with room to spare). Words alone do not bound
#: speech: one 50,000-character "word" is spelt out for 714 s.
MAX_CHARS = 2400
#: Longest speech in seconds (300 words at espeak's 175 wpm take ~105 s). Longer speech is cut after the
#: last word that ends in time (the text with it), and marked truncated.
MAX_SECONDS = 150.0

#: What an engine does with text its voice cannot speak (letters of another script, emoji and other
#: pictographs), which an English voice spells out letter by letter or names symbol by symbol:
#: "fail" (default) raises ``UnspeakableTextError`` (a failed item, reward None), "drop" removes those
#: characters and speaks the rest, "speak" passes them to the voice as they are.
UNSPEAKABLE_MODES = ("fail", "drop", "speak")

#: Scripts each voice language speaks (the first word of Unicode character names). Latin-script
#: languages speak Latin letters; a language not listed is not checked.
_LATIN_LANGUAGES = frozenset(
    "af an ca cs cy da de en eo es et eu fi fr ga gd hr hu id is it lt lv ms mt nb nl no pl pt ro sk sl sq "
    "sv sw tr vi".split())
_OTHER_SCRIPTS = {
    "ru": {"CYRILLIC"}, "uk": {"CYRILLIC"}, "bg": {"CYRILLIC"}, "sr": {"CYRILLIC"}, "mk": {"CYRILLIC"},
    "be": {"CYRILLIC"}, "el": {"GREEK"}, "grc": {"GREEK"},
}

_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\ufeff\ufffd]")


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
        fields = (self.engine, self.engine_version, self.text, self.voice)
        if all(type(f) is str for f in fields):  # the canonical JSON of the dict below, written directly
            engine, version, text, voice = map(_json_string, fields)
            return content_hash(f'{{"engine":{engine},"engine_version":{version},"text":{text},"voice":{voice}}}')
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


def clean_text(text: str, max_words: int = MAX_WORDS, max_chars: int | None = MAX_CHARS) -> tuple[str, bool]:
    """Normalise a completion for speech: NFC, control and zero-width characters to spaces, collapsed
    whitespace, at most ``max_words`` words and ``max_chars`` characters (cut at the last word boundary
    that fits, or inside a single over-long word). Returns ``(clean, truncated)``."""
    if not isinstance(text, str):
        raise TypeError(f"Expected a str completion, got {type(text).__name__}.")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    truncated = False
    words = text.split(" ")
    if max_words and len(words) > max_words:
        text, truncated = " ".join(words[:max_words]), True
    if max_chars and len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        text, truncated = (text[:cut] if cut > 0 else text[:max_chars]), True
    return text, truncated


class EmptyTextError(ValueError):
    """Raised for a text with nothing to speak (empty, whitespace or control characters only)."""


class UnspeakableTextError(ValueError):
    """Raised for a text holding characters the engine's voice cannot speak (``unspeakable="fail"``)."""


@functools.lru_cache(maxsize=64)
def speakable_scripts(language: str) -> frozenset[str] | None:
    """Unicode scripts a voice of ``language`` (e.g. "en-us", "en-gb+f3", "de") speaks; None: unchecked."""
    lang = language.split("+")[0].replace("_", "-").split("-")[0].lower()
    if lang in _LATIN_LANGUAGES:
        return frozenset({"LATIN"})
    if lang in _OTHER_SCRIPTS:
        return frozenset({"LATIN", *_OTHER_SCRIPTS[lang]})
    return None


def unspeakable_characters(text: str, scripts: frozenset[str] | None) -> list[str]:
    """Characters of ``text`` a voice speaking ``scripts`` cannot say: letters of other scripts, and
    pictographs (emoji, dingbats and other symbols from U+2190 on). Punctuation, digits, combining marks,
    mathematical signs and common symbols such as the degree sign or the copyright sign pass."""
    if scripts is None or (text.isascii() and "LATIN" in scripts):  # ASCII letters are Latin, its symbols < U+2190
        return []
    latin = "LATIN" in scripts
    out = []
    for char in text:
        if latin and char < "\x80":  # ASCII: Latin letters and symbols below U+2190, all speakable
            continue
        category = unicodedata.category(char)
        if category.startswith("L"):
            words = unicodedata.name(char, "?").split(" ")
            script = words[1] if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1 else words[0]
            if script not in scripts and script != "MODIFIER":  # modifier letters: apostrophe-like marks
                out.append(char)
        elif category in ("So", "Sk", "Co", "Cs", "Cn") and ord(char) >= 0x2190:
            out.append(char)
    return out


class SpeechEngine(abc.ABC):
    """Turns texts into stimuli. Subclasses implement ``_synthesize_one`` or override ``synthesize``."""

    #: registry name, also recorded in provenance and cache keys
    name: str = "speech"
    #: caps and the unspeakable-text mode, also as class defaults for engines that set up their own state
    max_chars: int = MAX_CHARS
    max_seconds: float = MAX_SECONDS
    unspeakable: str = "fail"
    #: whether synthesis is real work (audio): the pipeline overlaps it with prediction in chunks; an engine
    #: that only wraps the text (``text-only``) is run on the whole batch at once, which a text model needs
    speaks: bool = True

    def __init__(self, out_dir: str | Path | None = None, max_words: int = MAX_WORDS, keep_waveform: bool = True,
                 max_chars: int = MAX_CHARS, max_seconds: float = MAX_SECONDS, unspeakable: str = "fail"):
        """``out_dir``: where to write one WAV per stimulus (named by its key). Without it (the default)
        the audio stays in memory (``Stimulus.waveform``) and nothing is written to disk."""
        if out_dir is None and not keep_waveform:
            raise ValueError("keep_waveform=False needs an out_dir: the audio must live somewhere. "
                             "Pass out_dir=... or keep the waveform in memory.")
        if unspeakable not in UNSPEAKABLE_MODES:
            raise ValueError(f"unspeakable={unspeakable!r} is not known; use one of {', '.join(UNSPEAKABLE_MODES)}.")
        for name, value in (("max_words", max_words), ("max_chars", max_chars), ("max_seconds", max_seconds)):
            if not (value > 0 and value == value and value != float("inf")):
                raise ValueError(f"{name} must be a positive number, got {value!r}.")
        self.out_dir = Path(out_dir) if out_dir else None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_words = max_words
        self.max_chars = max_chars
        self.max_seconds = float(max_seconds)
        self.keep_waveform = keep_waveform
        self.unspeakable = unspeakable

    @property
    def language(self) -> str:
        """Language of the voice (e.g. "en-us"), which decides what text it can speak."""
        return self.voice or "en"

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
        clean, truncated = self.prepare(text)
        return self.finish(self._synthesize_one(clean), truncated)

    def prepare(self, text: str) -> tuple[str, bool]:
        """The text as it will be spoken, and whether it was cut: cleaned, capped in words and characters,
        and checked for characters the voice cannot speak (``unspeakable``)."""
        clean, truncated = clean_text(text, self.max_words, self.max_chars)
        if not clean.strip():
            raise EmptyTextError("Nothing to speak: the text is empty or only whitespace/control characters.")
        if self.unspeakable != "speak":
            bad = unspeakable_characters(clean, speakable_scripts(self.language))
            if bad and self.unspeakable == "fail":
                shown = "".join(dict.fromkeys(bad))[:12]
                raise UnspeakableTextError(
                    f"{len(bad)} of {len(clean)} characters cannot be spoken by the {self.language!r} voice "
                    f"(e.g. {shown!r}: another script or emoji, which it would spell out or name one by one). "
                    "Use a voice for that language, or the engine's unspeakable='drop' (remove them) or "
                    "'speak' (keep them).")
            if bad:
                drop = set(bad)
                clean, _ = clean_text("".join(" " if c in drop else c for c in clean), self.max_words, self.max_chars)
                if not clean.strip():
                    raise EmptyTextError("Nothing to speak once the characters the voice cannot speak are dropped.")
        return clean, truncated

    def finish(self, stim: Stimulus, truncated: bool) -> Stimulus:
        """Mark the cut and hold the speech to ``max_seconds`` (cut after the last word that ends in time)."""
        stim.truncated = truncated
        if stim.duration > self.max_seconds:
            stim = self._cut_to_seconds(stim)
        return stim

    def _cut_to_seconds(self, stim: Stimulus) -> Stimulus:
        limit = self.max_seconds
        keep = [w for w in stim.words if w.stop <= limit]
        if keep:
            following = stim.words[len(keep)] if len(keep) < len(stim.words) else None
            cut_s = min(limit, following.start) if following is not None else limit
        else:  # a single word longer than the limit: keep its first max_seconds
            first = stim.words[0]
            keep = [Word(first.text, first.start, limit - first.start, first.char_start, first.char_end)]
            cut_s = limit
        last = keep[-1]
        text = stim.text[: last.char_end] if last.char_end >= 0 else " ".join(stim.text.split(" ")[: len(keep)])
        has_audio = stim.waveform is not None or stim.audio_path is not None
        waveform = stim.load_waveform()[: int(round(cut_s * stim.sample_rate))] if has_audio else None
        old_path = stim.audio_path
        cut = Stimulus(text=text, words=keep, audio_path=None, sample_rate=stim.sample_rate,
                       duration=len(waveform) / stim.sample_rate if has_audio else cut_s, engine=stim.engine,
                       engine_version=stim.engine_version, voice=stim.voice, truncated=True, waveform=waveform)
        if old_path is not None and waveform is not None:
            cut.audio_path = self._write_wav(cut.key(), waveform, stim.sample_rate)
            if cut.audio_path != old_path:
                Path(old_path).unlink(missing_ok=True)
        if not self.keep_waveform:
            cut.waveform = None
        return cut

    @abc.abstractmethod
    def _synthesize_one(self, text: str) -> Stimulus:
        """Synthesize one clean, non-empty text."""

    def _write_wav(self, key: str, samples: np.ndarray, sample_rate: int) -> Path | None:
        """A 16-bit WAV named by the stimulus key in ``out_dir`` (content-addressed, so reruns overwrite);
        None, and nothing written, when the engine has no ``out_dir``."""
        if self.out_dir is None:
            return None
        import soundfile

        path = self.out_dir / f"{key}.wav"
        soundfile.write(str(path), samples, sample_rate, subtype="PCM_16")
        return path

    def describe(self) -> dict[str, Any]:
        return {"speech_engine": self.name, "speech_engine_version": self.version, "voice": self.voice,
                "max_words": self.max_words, "max_chars": self.max_chars, "max_seconds": self.max_seconds,
                "unspeakable": self.unspeakable}


SPEECH_ENGINES: Registry[SpeechEngine] = Registry("speech engine")
