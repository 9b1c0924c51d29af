"""Stimuli with real WAV files written by hand (words every 0.4 s), and the double's expected maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainrl.stimulus import Stimulus, Word

DOUBLES = Path(__file__).resolve().parents[2] / "doubles"
DOUBLED_PACKAGES = ("tribev2", "neuralset", "exca")


def is_double_module(name: str) -> bool:
    """Whether ``name`` is a module of a doubled package (tribev2, neuralset, exca)."""
    return any(name == p or name.startswith(p + ".") for p in DOUBLED_PACKAGES)
from brainrl.brain.base import MAP_ATOL, MAP_RTOL


def make_stimulus(text: str, folder: Path, *, step: float = 0.4, engine: str = "espeak", sample_rate: int = 16000,
                  write_file: bool = True) -> Stimulus:
    """A stimulus whose words start every ``step`` s, with a WAV file of that length (or only a waveform)."""
    import soundfile

    words, pos = [], 0
    for i, token in enumerate(text.split()):
        start = text.index(token, pos)
        pos = start + len(token)
        words.append(Word(token, step * i, step * 0.9, start, pos))
    duration = step * len(words) + 0.2
    t = np.arange(int(sample_rate * duration)) / sample_rate
    waveform = (0.1 * np.sin(2 * np.pi * (200 + len(text)) * t)).astype(np.float32)
    path = None
    if write_file:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"speech-{abs(hash(text)) % 10**8}.wav"
        soundfile.write(str(path), waveform, sample_rate)
    return Stimulus(text, words, path, sample_rate, duration, engine, "test-1", waveform=None if write_file else waveform)


def expected_maps(stimulus: Stimulus) -> np.ndarray:
    """What the double predicts for this stimulus, NaN in the text-feature columns (computed by the model)."""
    from tribev2.demo_utils import expected_rows

    return expected_rows([w.text for w in stimulus.words], [w.start for w in stimulus.words],
                         [w.duration for w in stimulus.words], stimulus.duration)


def assert_matches_double(data: np.ndarray, stimulus: Stimulus) -> None:
    """Every column but the text-feature ones equals the double's expected rows exactly; those are finite
    and non-zero wherever a word overlaps the TR."""
    from tribev2.demo_utils import TEXT_COLUMNS

    expected = expected_maps(stimulus)
    assert data.shape == expected.shape, (data.shape, expected.shape)
    known = ~np.isnan(expected)
    np.testing.assert_allclose(data[known], expected[known], rtol=MAP_RTOL, atol=MAP_ATOL)
    text = data[:, TEXT_COLUMNS]
    assert np.isfinite(text).all()
    with_words = expected[:, 1] > 0
    assert (np.abs(text[with_words]).sum(1) > 0).all()
