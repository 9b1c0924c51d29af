"""Small in-test implementations of the speech and brain interfaces, for pipeline mechanics.

They are not stand-ins for unavailable services: they let tests inject failures and count calls. The
real espeak engine and synthetic model are tested with the same pipeline elsewhere.
"""

from __future__ import annotations

import numpy as np

from brainrl.brain.base import N_VERTICES, BrainMap, BrainModel, Failed
from brainrl.stimulus.base import SpeechEngine, Stimulus, Word


class CountingSpeech(SpeechEngine):
    """One word per 0.4 s, silent audio; fails on texts containing 'FAILSPEECH'."""

    name = "counting"

    @property
    def version(self) -> str:
        return "counting-1"

    def _synthesize_one(self, text: str) -> Stimulus:
        if "FAILSPEECH" in text:
            raise RuntimeError("speech engine refused this text")
        words, pos = [], 0
        for i, token in enumerate(text.split(" ")):
            start = text.index(token, pos)
            pos = start + len(token)
            words.append(Word(token, 0.4 * i, 0.4, start, pos))
        duration = 0.4 * len(words)
        return Stimulus(text, words, None, 16000, duration, self.name, self.version,
                        waveform=np.zeros(int(16000 * duration), np.float32))


class LengthBrain(BrainModel):
    """Activity proportional to the number of words, higher in the first 500 vertices; counts calls."""

    name = "length"

    def __init__(self, fail_words: str | None = None):
        self.calls: list[int] = []
        self.fail_words = fail_words

    def identity(self):
        return {"model": "length", "version": 1}

    def predict(self, stimuli):
        self.calls.append(len(stimuli))
        out = []
        for s in stimuli:
            if self.fail_words and self.fail_words in s.text:
                out.append(Failed("model refused"))
                continue
            frames = max(1, int(np.ceil(s.duration)))
            data = np.full((frames, N_VERTICES), 0.01 * len(s.words), np.float32)
            data[:, :500] += 0.1 * len(s.words)
            out.append(BrainMap(data, {"model": "length"}))
        return out
