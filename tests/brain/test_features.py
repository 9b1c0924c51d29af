"""Stimulus features of the synthetic model: HRF, grid placement, envelope, syntactic load."""

from __future__ import annotations

import numpy as np
import pytest

from brainrl.brain.features import (
    double_gamma_hrf,
    frame_matrix,
    n_frames_for,
    place_on_grid,
    syntactic_load,
    audio_envelope,
    word_bins,
    word_features,
)
from brainrl.stimulus import Stimulus, Word


def test_hrf_shape():
    h = double_gamma_hrf(dt=0.5)
    assert h.sum() == pytest.approx(1.0)
    peak_s = np.argmax(h) * 0.5
    assert 4.0 <= peak_s <= 6.0
    assert h[int(15 / 0.5)] < 0  # undershoot


def test_frame_matrix_applies_the_five_second_offset():
    # an impulse at 10 s peaks ~5 s later in BOLD, which TRIBE reports 5 s earlier: near frame 10
    n = 30
    grid = np.zeros((2 * n, 1))
    grid[20] = 1.0
    frames = frame_matrix(n) @ grid
    assert abs(int(np.argmax(frames[:, 0])) - 10) <= 1
    # a sustained input settles at 1 (unit-sum HRF)
    steady = frame_matrix(60) @ np.ones((120, 1))
    assert steady[30, 0] == pytest.approx(1.0, abs=1e-6)


def test_frames_follow_ceil_of_duration():
    assert [n_frames_for(d) for d in (0.2, 1.0, 1.01, 39.5, 40.0)] == [1, 1, 2, 40, 40]


def test_words_are_summed_into_every_bin_they_overlap():
    words = [Word("a", 0.74, 0.5), Word("b", 0.8, 1.1), Word("c", 9.9, 3.0)]
    first, count = word_bins(words, n_bins=20)
    assert first.tolist() == [1, 2, 19]  # round(1.48)=1, round(1.6)=2, round(19.8)=20 -> clipped to 19
    assert count.tolist() == [1, 2, 1]  # max(1, round(1.0)), round(2.2), clipped at the grid end
    grid = place_on_grid(first, count, np.array([1.0, 10.0, 100.0]), 20)[:, 0]
    assert grid[:5].tolist() == [0.0, 1.0, 10.0, 10.0, 0.0]
    assert grid[19] == 100.0 and grid.sum() == 121.0


def test_envelope_is_rms_over_reference_and_not_normalised():
    sr = 16000
    t = np.arange(3 * sr) / sr
    wave = (0.1 * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # RMS 0.1
    env = audio_envelope(wave, sr, n_bins=8)  # the last two bins are past the audio
    assert env[:6] == pytest.approx(np.ones(6), abs=1e-3)
    assert env[6:].tolist() == [0.0, 0.0]
    assert audio_envelope(2 * wave, sr, 8)[0] == pytest.approx(2.0, abs=2e-3)
    # a rate with half-sample bins takes the general path and agrees
    assert audio_envelope(wave[: 3 * 11025], 11025, 6) == pytest.approx(np.ones(6), abs=2e-2)


def test_syntactic_load_counts_embedding_and_sentence_length():
    s = syntactic_load(["The", "dog", "ran", "The", "cat", "sat"], ["", "", ".", "", "", "."])
    assert s.shape == (6,)
    assert s[3] == s[0]  # position resets at the sentence end
    longer = syntactic_load(["The", "big", "dog", "ran"], ["", "", "", "."])
    assert longer[0] > s[0]  # a longer sentence loads every word in it (constituent size)
    embedded = syntactic_load(["The", "man", "who", "left", "was", "sad"], [""] * 6)
    flat = syntactic_load(["The", "man", "and", "left", "was", "sad"], [""] * 6)
    assert embedded[2] - flat[2] == pytest.approx(0.5)  # one open embedded clause
    with_comma = syntactic_load(["Yes", "we", "can"], [",", "", "."])
    without = syntactic_load(["Yes", "we", "can"], ["", "", "."])
    assert with_comma[0] - without[0] == pytest.approx(0.3)


def test_word_features_from_a_stimulus():
    text = "Photosynthesis, which plants use, is remarkable."
    words = [Word("Photosynthesis", 0.0, 0.8, 0, 14), Word("which", 0.8, 0.3, 16, 21),
             Word("plants", 1.1, 0.4, 22, 28), Word("use", 1.5, 0.3, 29, 32), Word("is", 1.8, 0.2, 34, 36),
             Word("remarkable", 2.0, 0.6, 37, 47)]
    stim = Stimulus(text, words, None, 16000, 3.0, "hand-built", "1", waveform=np.zeros(48000, np.float32))
    wf = word_features(stim)
    assert wf.letters.tolist() == [14, 5, 6, 3, 2, 10]
    assert wf.wordpieces[0] > 1 and wf.wordpieces[2] == 1  # the rare word splits into several pieces
    assert wf.syntactic[1] > wf.syntactic[0]  # "which" opens a clause after the comma
    assert wf.semantic.shape == (6, 384) and np.abs(wf.semantic).sum() > 0
    assert np.abs(word_features(stim, "lexical").semantic).sum() == 0
    with pytest.raises(ValueError, match="minilm-static"):
        word_features(stim, "glove")


def test_frame_matrix_cache_is_bounded_in_bytes():
    """On main every length up to 256 entries was kept: one 3,000 s stimulus left ~144 MB behind."""
    from brainrl.brain import features

    long_one = features.frame_matrix(features.MAX_CACHED_FRAMES + 44)
    before = features._cached_frame_matrix.cache_info().currsize
    again = features.frame_matrix(features.MAX_CACHED_FRAMES + 44)
    assert again is not long_one and np.array_equal(again, long_one)  # built each time, not kept
    assert features._cached_frame_matrix.cache_info().currsize == before
    assert features.frame_matrix(30) is features.frame_matrix(30)  # short ones are cached
    worst = features._FRAME_MATRIX_CACHE * features.MAX_CACHED_FRAMES * 2 * features.MAX_CACHED_FRAMES * 8
    assert worst <= 64 * 2**20
