"""A speech engine that speaks nothing: text in, a ``Stimulus`` without audio or word timings.

Why: a model that reads text alone (the distilled surrogate, ``brainrl.brain.surrogate``) must not pay
for speech synthesis, which costs more than the surrogate itself. Nothing is spoken, so nothing is timed:
``words`` is empty and ``duration`` is a nominal length (``SECONDS_PER_WORD`` per whitespace token plus
``SECONDS_PER_CHARACTER`` per visible character), recorded so the stimulus stays a valid one. A model
that reads audio or word timings (the synthetic model, TRIBE v2) returns a ``Failed`` item naming the
missing audio instead of a map.
"""

from __future__ import annotations

from typing import Any

from brainrl.stimulus.base import MAX_WORDS, SpeechEngine, Stimulus

#: nominal seconds per token and per character (a length on record, not a voice)
SECONDS_PER_WORD = 0.12
SECONDS_PER_CHARACTER = 0.05


class TextOnlyEngine(SpeechEngine):
    """Stimuli without audio (``audio_path=None``, no waveform) for models that read only the text."""

    name = "text-only"
    speaks = False  # nothing to overlap: the pipeline hands the model the whole batch in one call

    def __init__(self, out_dir: Any = None, max_words: int = MAX_WORDS, keep_waveform: bool = False):
        # no audio is written, so no temporary folder is made (unlike engines that write WAV files)
        self.out_dir = None
        self.max_words = max_words
        self.keep_waveform = False

    @property
    def version(self) -> str:
        return f"text-only-2:{SECONDS_PER_WORD}:{SECONDS_PER_CHARACTER}"

    def _synthesize_one(self, text: str) -> Stimulus:
        tokens = text.split()
        duration = SECONDS_PER_WORD * len(tokens) + SECONDS_PER_CHARACTER * sum(map(len, tokens))
        return Stimulus(text, [], None, 16000, duration, self.name, self.version)
