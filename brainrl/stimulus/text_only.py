"""A speech engine that speaks nothing: text in, a ``Stimulus`` with nominal word timings and no audio.

Why: a model that reads text alone (the distilled surrogate, ``brainrl.brain.surrogate``) must not pay
for speech synthesis, which costs more than the surrogate itself. The words are the text's whitespace
tokens (the same tokens the espeak engine times), laid end to end at a nominal rate so every consumer's
checks on word timings hold. There is no waveform: a model that reads audio (the synthetic model,
TRIBE v2) returns a ``Failed`` item naming the missing audio instead of a map.
"""

from __future__ import annotations

from typing import Any

from brainrl.stimulus.base import MAX_WORDS, SpeechEngine, Stimulus, Word
from brainrl.stimulus.timing import token_spans

#: nominal seconds per word and per character; a placeholder for consumers that need times, not a voice
SECONDS_PER_WORD = 0.12
SECONDS_PER_CHARACTER = 0.05


class TextOnlyEngine(SpeechEngine):
    """Stimuli without audio (``audio_path=None``, no waveform) for models that read only the text."""

    name = "text-only"

    def __init__(self, out_dir: Any = None, max_words: int = MAX_WORDS, keep_waveform: bool = False):
        # no audio is written, so no temporary folder is made (unlike engines that write WAV files)
        self.out_dir = None
        self.max_words = max_words
        self.keep_waveform = False

    @property
    def version(self) -> str:
        return f"text-only-1:{SECONDS_PER_WORD}:{SECONDS_PER_CHARACTER}"

    def _synthesize_one(self, text: str) -> Stimulus:
        words, t = [], 0.0
        for start, end in token_spans(text):
            duration = SECONDS_PER_WORD + SECONDS_PER_CHARACTER * (end - start)
            words.append(Word(text[start:end], t, duration, start, end))
            t += duration
        return Stimulus(text, words, None, 16000, t, self.name, self.version)
