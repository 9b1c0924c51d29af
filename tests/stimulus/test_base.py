"""What every speech engine does before and after speaking: caps in words, characters and seconds; text
the voice cannot speak; audio kept in memory (no files left in the temp folder)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from brainrl.stimulus import MAX_CHARS, MAX_SECONDS, EmptyTextError, UnspeakableTextError, clean_text
from brainrl.stimulus.base import speakable_scripts, unspeakable_characters
from brainrl.stimulus.espeak import EspeakEngine
from brainrl.stimulus.timing import check_words


@pytest.fixture(scope="module")
def engine():
    return EspeakEngine()


def test_clean_text_caps_characters_not_only_words():
    word = "x" * 50_000  # one "word": on main it was kept whole and spoken for 714 s
    clean, truncated = clean_text(word)
    assert truncated and len(clean) == MAX_CHARS
    sentence = "short words here " * 400
    clean, truncated = clean_text(sentence, max_words=10_000)
    assert truncated and len(clean) <= MAX_CHARS and not clean.endswith(" ")
    assert sentence.startswith(clean) and sentence[len(clean)] == " "  # cut at a word boundary
    assert clean_text("fits easily") == ("fits easily", False)


def test_a_huge_word_is_held_to_max_seconds(engine):
    stim = engine.synthesize_one("y" * 50_000)
    assert stim.truncated and 0 < stim.duration <= MAX_SECONDS
    check_words(stim.words, stim.duration)


def test_long_speech_is_cut_after_the_last_word_that_ends_in_time():
    short = EspeakEngine(max_seconds=3.0)
    text = "The committee reviewed every proposal carefully before the final vote was taken on Friday."
    stim = short.synthesize_one(text)
    full = EspeakEngine().synthesize_one(text)
    assert full.duration > 3.0 and not full.truncated
    assert stim.truncated and stim.duration <= 3.0
    assert text.startswith(stim.text) and [w.text for w in stim.words] == stim.text.split(" ")
    check_words(stim.words, stim.duration)
    assert len(stim.waveform) == round(stim.duration * stim.sample_rate)
    assert stim.words == full.words[: len(stim.words)]  # same timings as the uncut speech
    assert stim.key() != full.key()


@pytest.mark.parametrize("text", ["\u4f60\u597d\uff0c\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
                                  "\u0645\u0631\u062d\u0628\u0627 \u0628\u0643\u0645 \u062c\u0645\u064a\u0639\u0627",
                                  "Great answer \U0001f600\U0001f680\u2728"])
def test_text_the_english_voice_cannot_speak_fails_with_a_reason(engine, text):
    with pytest.raises(UnspeakableTextError, match="cannot be spoken by the 'en-us' voice.*unspeakable='drop'"):
        engine.synthesize_one(text)


def test_unspeakable_text_becomes_a_failed_item_in_the_pipeline():
    from brainrl.brain import BrainMap, Failed
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from tests.helpers import LengthBrain

    pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=EspeakEngine(), model=LengthBrain())
    english, chinese = pipeline.predict_texts(["A plain English sentence.", "\u4f60\u597d\u4e16\u754c"])
    assert isinstance(english, BrainMap)
    assert isinstance(chinese, Failed) and "cannot be spoken" in chinese.reason


def test_unspeakable_modes_drop_and_speak():
    dropped = EspeakEngine(unspeakable="drop").synthesize_one("Well done \U0001f600 indeed \u4f60\u597d")
    assert dropped.text == "Well done indeed"
    spoken = EspeakEngine(unspeakable="speak").synthesize_one("Well done \U0001f600")
    assert spoken.text == "Well done \U0001f600" and spoken.duration > dropped.duration / 2
    with pytest.raises(EmptyTextError, match="dropped"):
        EspeakEngine(unspeakable="drop").synthesize_one("\U0001f600\U0001f600")
    with pytest.raises(ValueError, match="unspeakable='loud' is not known"):
        EspeakEngine(unspeakable="loud")


def test_what_counts_as_speakable():
    latin = speakable_scripts("en-us+f3")
    ok = "Caf\u00e9, na\u00efve \u00fcber \u2014 3.5% \u00a9 20\u00b0C don\u02bct \uff21"  # accents, dash, ©, °, modifier, fullwidth A
    assert unspeakable_characters(ok, latin) == []
    assert unspeakable_characters("\u043f\u0440\u0438\u0432\u0435\u0442 \u03b1\u03b2 \U0001f600 \u2764", latin) == \
        list("\u043f\u0440\u0438\u0432\u0435\u0442\u03b1\u03b2\U0001f600\u2764")
    assert unspeakable_characters("\u043f\u0440\u0438\u0432\u0435\u0442", speakable_scripts("ru")) == []
    assert speakable_scripts("cmn") is None  # languages not listed are not checked
    russian = EspeakEngine(voice="ru").synthesize_one("\u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440")
    assert russian.words and russian.voice == "ru"


def test_no_temp_folder_residue_after_a_run_or_a_killed_run(tmp_path):
    """On main every engine made a brainrl-speech-* folder with one WAV per text, never removed."""
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=os.getcwd())
    script = textwrap.dedent("""
        import sys
        from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
        from brainrl.stimulus import get_speech_engine
        from tests.helpers import LengthBrain
        engine = get_speech_engine("espeak", workers=int(sys.argv[1]))
        pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=engine, model=LengthBrain())
        out = pipeline.predict_texts(["First text.", "Second text, a little longer.", "Third."])
        assert all(out), out
        engine.close()
        print("spoken", flush=True)
        if sys.argv[2] == "hang":
            sys.stdin.read()
    """)
    for workers in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", script, workers, "exit"], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert sorted(os.listdir(tmp_path)) == []
    killed = subprocess.Popen([sys.executable, "-c", script, "1", "hang"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert killed.stdout.readline().strip() == "spoken"
    assert len(os.listdir(tmp_path)) == 1  # the process's private copy of libespeak-ng
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    done = subprocess.run([sys.executable, "-c", script, "1", "exit"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == []  # the killed process's copy was swept by the next one
