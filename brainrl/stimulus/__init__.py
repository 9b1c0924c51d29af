"""Speech synthesis and word timings: text -> Stimulus. Knows nothing about brains."""

from brainrl.stimulus.base import (
    MAX_CHARS,
    MAX_SECONDS,
    MAX_WORDS,
    SPEECH_ENGINES,
    UNSPEAKABLE_MODES,
    EmptyTextError,
    SpeechEngine,
    Stimulus,
    UnspeakableTextError,
    Word,
    clean_text,
)

SPEECH_ENGINES.register("espeak", "brainrl.stimulus.espeak:EspeakEngine")
SPEECH_ENGINES.register("gtts-whisperx", "brainrl.stimulus.online:GTTSWhisperXEngine")
SPEECH_ENGINES.register("text-only", "brainrl.stimulus.text_only:TextOnlyEngine")
SPEECH_ENGINES.register("piper", "brainrl.stimulus.piper:PiperEngine")


def get_speech_engine(name: str = "espeak", **kwargs) -> SpeechEngine:
    """Build a registered speech engine by name (``brainrl.stimulus.SPEECH_ENGINES.names()``)."""
    return SPEECH_ENGINES.create(name, **kwargs)


__all__ = [
    "MAX_CHARS",
    "MAX_SECONDS",
    "MAX_WORDS",
    "SPEECH_ENGINES",
    "UNSPEAKABLE_MODES",
    "EmptyTextError",
    "SpeechEngine",
    "Stimulus",
    "UnspeakableTextError",
    "Word",
    "clean_text",
    "get_speech_engine",
]
