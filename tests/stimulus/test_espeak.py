"""The default engine on real espeak-ng speech: words, timings, WAV files, determinism, workers."""

import threading

import numpy as np
import pytest
import soundfile

from brainrl.stimulus import MAX_WORDS, EmptyTextError, get_speech_engine
from brainrl.stimulus.espeak import EspeakEngine, espeak_library
from brainrl.stimulus.timing import check_words

HARD_TEXT = (
    'In 2025, prices rose 3.5% to $1,200. "Hello," she said \u2014 caf\u00e9, na\u00efve, \u00fcber; '
    "\u4f60\u597d \u043f\u0440\u0438\u0432\u0435\u0442 \U0001f600 U.S.-based Dr. Smith isn't here?! ok..."
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # HARD_TEXT holds Chinese, Cyrillic and an emoji: spoken as they are here, to test the timings
    return EspeakEngine(out_dir=tmp_path_factory.mktemp("espeak"), unspeakable="speak")


def assert_valid(stim):
    assert stim.words, "no words"
    assert [w.text for w in stim.words] == stim.text.split(" ")
    for w in stim.words:
        assert stim.text[w.char_start : w.char_end] == w.text
    check_words(stim.words, stim.duration)


def test_hard_text_gives_one_word_per_token_with_valid_timings(engine):
    stim = engine.synthesize_one(HARD_TEXT)
    assert_valid(stim)
    by_text = {w.text: w for w in stim.words}
    # a number is spoken as several words ("two thousand twenty five") but stays one Word
    assert by_text["2025,"].duration > 0.5
    assert stim.sample_rate == 22050 and stim.engine == "espeak" and stim.voice == "en-us"
    assert 5.0 < stim.duration < 30.0


def test_word_ends_stop_at_the_pause_not_at_the_next_word(engine):
    stim = engine.synthesize_one("Hello, world. It is late.")
    hello, world = stim.words[0], stim.words[1]
    assert hello.stop < world.start - 0.05  # the comma pause is not counted as speech
    assert stim.words[-1].stop <= stim.duration


def test_control_characters_are_removed_and_empty_texts_rejected(engine):
    stim = engine.synthesize_one("two\x00 words\x07\n")
    assert stim.text == "two words" and [w.text for w in stim.words] == ["two", "words"]
    for empty in ["", "   ", "\x00\x01\u200b"]:
        with pytest.raises(EmptyTextError):
            engine.synthesize_one(empty)
    with pytest.raises(EmptyTextError, match="speaks no word"):
        engine.synthesize_one('... \u2014 "')


def test_long_text_is_capped_and_marked_truncated(engine):
    stim = engine.synthesize_one(" ".join(["word"] * (MAX_WORDS + 50)))
    assert stim.truncated and len(stim.words) == MAX_WORDS
    check_words(stim.words, stim.duration)
    assert not engine.synthesize_one("short text").truncated


def test_same_text_twice_gives_identical_speech(engine, tmp_path):
    # espeak-ng carries state between utterances; the engine must not let it leak into the output
    first = engine.synthesize_one(HARD_TEXT)
    engine.synthesize_one("Something else in between, 1999!")
    again = engine.synthesize_one(HARD_TEXT)
    assert again.words == first.words
    np.testing.assert_array_equal(again.waveform, first.waveform)
    second = EspeakEngine(out_dir=tmp_path, unspeakable="speak").synthesize_one(HARD_TEXT)
    assert first.words == second.words
    np.testing.assert_array_equal(first.waveform, second.waveform)
    assert first.key() == second.key()


def test_wav_file_matches_waveform_and_duration(engine):
    stim = engine.synthesize_one("The quick brown fox jumps over the lazy dog.")
    assert stim.audio_path.name == f"{stim.key()}.wav"
    info = soundfile.info(str(stim.audio_path))
    assert info.samplerate == 22050 and info.subtype == "PCM_16" and info.channels == 1
    assert info.frames / info.samplerate == pytest.approx(stim.duration)
    data, _ = soundfile.read(str(stim.audio_path), dtype="float32")
    np.testing.assert_array_equal(data, stim.waveform)
    assert 0.02 < float(np.sqrt(np.mean(data**2))) < 0.5  # speech-level audio, not silence or clipping


def test_keep_waveform_false_reads_the_file(tmp_path):
    stim = EspeakEngine(out_dir=tmp_path, keep_waveform=False).synthesize_one("Read me from disk.")
    assert stim.waveform is None
    assert len(stim.load_waveform()) == round(stim.duration * stim.sample_rate)


def test_version_and_rate(tmp_path):
    slow = EspeakEngine(out_dir=tmp_path, rate=120)
    fast = EspeakEngine(out_dir=tmp_path, rate=260)
    assert espeak_library().version in slow.version and "en-us" in slow.version and "120wpm" in slow.version
    text = "Speaking rate changes how long this sentence lasts."
    slow_stim, fast_stim = slow.synthesize_one(text), fast.synthesize_one(text)
    assert slow_stim.duration > 1.5 * fast_stim.duration
    assert slow_stim.key() != fast_stim.key()
    # engines with different settings share the one library without leaking settings into each other
    assert slow.synthesize_one(text).duration == slow_stim.duration


def test_bad_settings_name_the_fix(tmp_path):
    with pytest.raises(KeyError, match="Did you mean 'en-us'"):
        EspeakEngine(out_dir=tmp_path, voice="en-usa")
    with pytest.raises(ValueError, match="80-450"):
        EspeakEngine(out_dir=tmp_path, rate=10)
    other = EspeakEngine(out_dir=tmp_path, voice="de")
    assert other.synthesize_one("Guten Tag, wie geht es Ihnen?").voice == "de"


def test_threads_share_the_library_safely(engine):
    texts = [f"Thread number {i} says hello {i * 7} times." for i in range(6)]
    expected = [engine.synthesize_one(t).words for t in texts]
    results = {}

    def run(i):
        results[i] = engine.synthesize_one(texts[i]).words

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(texts))] == expected


def test_registry_default_and_worker_pool_give_the_same_stimuli(tmp_path):
    texts = ["First text, 42 words.", "Second text!", "Third \u2014 and last: 3.5%."]
    serial = get_speech_engine("espeak", out_dir=tmp_path / "serial").synthesize(texts)
    with get_speech_engine("espeak", out_dir=tmp_path / "pool", workers=2) as pooled_engine:
        pooled = pooled_engine.synthesize(texts)
        with pytest.raises(EmptyTextError, match="text 1"):
            pooled_engine.synthesize(["fine", " \x00 "])
    assert [s.words for s in pooled] == [s.words for s in serial]
    assert [s.key() for s in pooled] == [s.key() for s in serial]
    for stim in pooled:
        assert stim.audio_path.parent == tmp_path / "pool" and stim.audio_path.exists()
        np.testing.assert_array_equal(stim.load_waveform(), serial[pooled.index(stim)].waveform)
