"""The gTTS + WhisperX reference engine, run through faithful doubles of both packages (conftest.py)."""

import sys

import numpy as np
import pytest
import soundfile

from brainrl.stimulus import EmptyTextError, get_speech_engine
from brainrl.stimulus.online import GTTSWhisperXEngine, map_aligned_words
from brainrl.stimulus.timing import check_words

TEXT = "In 2025 Dr. Smith said prices rose 3.5% \u2014 to $1,200 for each ticket."


def test_every_token_gets_a_time_and_numerals_are_interpolated(online_doubles, tmp_path):
    engine = GTTSWhisperXEngine(out_dir=tmp_path, device="cpu")
    stim = engine.synthesize_one(TEXT)
    assert [w.text for w in stim.words] == TEXT.split()
    check_words(stim.words, stim.duration)
    words = {w.text: w for w in stim.words}
    # the aligner gave no start for these; they sit between their timed neighbours instead of vanishing
    for numeral, before, after in [("2025", "In", "Dr."), ("3.5%", "rose", "\u2014"), ("$1,200", "to", "for")]:
        assert words[before].start < words[numeral].start < words[after].start
        assert words[numeral].duration > 0.05
    # "Dr." was heard as "Doctor": the differing stretch still takes that word's time
    assert words["Dr."].start > words["2025"].start
    assert stim.engine == "gtts-whisperx" and stim.voice == "gtts-en"
    assert stim.sample_rate == soundfile.info(str(stim.audio_path)).samplerate  # the MP3's own rate


def test_models_are_loaded_once_for_many_texts_and_engines(online_doubles, tmp_path):
    texts = [f"Sentence number {i} is about rivers and mountains." for i in range(4)]
    first = GTTSWhisperXEngine(out_dir=tmp_path / "a", device="cpu")
    first.synthesize(texts)
    GTTSWhisperXEngine(out_dir=tmp_path / "b", device="cpu").synthesize(texts[:2])
    assert online_doubles["load_model"] == 1 and online_doubles["load_align_model"] == 1
    assert online_doubles["transcribe"] == 6 and online_doubles["align"] == 6 and online_doubles["gtts"] == 6
    GTTSWhisperXEngine(out_dir=tmp_path / "c", device="cpu", whisper_arch="tiny").synthesize(texts[:1])
    assert online_doubles["load_model"] == 2  # a different model is a different cache entry


def test_cpu_uses_int8_and_the_version_records_the_models(online_doubles, tmp_path):
    engine = get_speech_engine("gtts-whisperx", out_dir=tmp_path, device="cpu")
    assert engine.compute_type == "int8"
    assert GTTSWhisperXEngine(out_dir=tmp_path, device="cuda").compute_type == "float16"
    for part in ("gtts-2.5.4", "whisperx-", "large-v3", "int8"):
        assert part in engine.version


def test_tribe_receives_the_gtts_mp3_itself(online_doubles, tmp_path):
    """TRIBE feeds gTTS's MP3 to its audio model; the engine hands on that file, byte for byte."""
    from brainrl.brain.tribe.events import content_audio_path

    stim = GTTSWhisperXEngine(out_dir=tmp_path / "speech", device="cpu").synthesize_one("A short test sentence.")
    assert stim.audio_path.name == f"{stim.key()}.mp3"
    assert sorted(p.name for p in (tmp_path / "speech").iterdir()) == [stim.audio_path.name]  # no WAV beside it
    assert stim.audio_path.read_bytes() == online_doubles["mp3_bytes"][-1]
    handed_on = content_audio_path(stim, tmp_path / "tribe")
    assert handed_on.suffix == ".mp3" and handed_on.read_bytes() == online_doubles["mp3_bytes"][-1]
    data, rate = soundfile.read(str(stim.audio_path), dtype="float32")
    assert rate == stim.sample_rate != 16000  # not the aligner's 16 kHz resampling
    np.testing.assert_allclose(stim.waveform, data, atol=1e-6)  # the kept waveform is the MP3 decoded
    assert len(data) / rate == pytest.approx(stim.duration, abs=1e-6)
    assert stim.words[-1].stop <= stim.duration
    assert "+mp3" in stim.engine_version
    assert GTTSWhisperXEngine(device="cpu").describe()["audio_format"] == "gtts-mp3"


def test_without_out_dir_the_mp3_lives_only_for_the_call(online_doubles, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stim = GTTSWhisperXEngine(device="cpu").synthesize_one("Kept in memory only.")
    assert stim.audio_path is None and list(tmp_path.iterdir()) == []
    assert stim.waveform is not None and len(stim.waveform) / stim.sample_rate == pytest.approx(stim.duration)
    from brainrl.brain.tribe.events import content_audio_path

    assert content_audio_path(stim, tmp_path / "tribe").is_file()  # TRIBE still gets the decoded audio


def test_english_is_aligned_with_tribes_large_aligner(online_doubles, tmp_path):
    engine = GTTSWhisperXEngine(out_dir=tmp_path, device="cpu")
    engine.synthesize_one("Aligned by the large model.")
    assert online_doubles["align_model_names"] == ["WAV2VEC2_ASR_LARGE_LV60K_960H"]
    assert "WAV2VEC2_ASR_LARGE_LV60K_960H" in engine.version
    assert engine.describe()["align_model"] == "WAV2VEC2_ASR_LARGE_LV60K_960H"
    # an explicit aligner is honoured, and is another cache entry and another version
    base = GTTSWhisperXEngine(out_dir=tmp_path, device="cpu", align_model="WAV2VEC2_ASR_BASE_960H")
    base.synthesize_one("Aligned by the base model.")
    assert online_doubles["align_model_names"][-1] == "WAV2VEC2_ASR_BASE_960H"
    assert base.version != engine.version
    # TRIBE passes its aligner for English only; other languages get WhisperX's default
    assert GTTSWhisperXEngine(device="cpu", lang="de").align_model_name("de") is None


def test_failures_name_the_cause(online_doubles, tmp_path):
    engine = GTTSWhisperXEngine(out_dir=tmp_path, device="cpu")
    with pytest.raises(EmptyTextError):
        engine.synthesize_one(" \x00 ")
    online_doubles["offline"] = True
    with pytest.raises(RuntimeError, match="network access"):
        engine.synthesize_one("No network here.")


def test_no_speech_heard_spreads_words_over_the_audio(online_doubles, tmp_path):
    online_doubles["silent"] = True
    stim = GTTSWhisperXEngine(out_dir=tmp_path, device="cpu").synthesize_one("Nothing was heard here.")
    check_words(stim.words, stim.duration)
    assert len(stim.words) == 4


def test_missing_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gtts", None)  # makes "import gtts" raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'brainrl\[online\]'"):
        GTTSWhisperXEngine(out_dir=tmp_path, device="cpu")


def test_map_aligned_words_handles_both_whisperx_generations():
    text = "It cost $5 in 1999, really."
    old = [
        {"word": "It", "start": 0.1, "end": 0.2}, {"word": "cost", "start": 0.3, "end": 0.5}, {"word": "$5"},
        {"word": "in", "start": 0.9, "end": 1.0}, {"word": "1999,"}, {"word": "really.", "start": 2.0, "end": 2.4},
    ]  # fmt: skip
    spans, starts, ends = map_aligned_words(text, old)
    assert starts == [0.1, 0.3, None, 0.9, None, 2.0]
    # whisperX >= 3.8.3 interpolates inside a sentence itself: those times are used as given
    new = [dict(w) for w in old]
    new[2].update(start=0.6, end=0.8)
    assert map_aligned_words(text, new)[1][2] == 0.6
    # a transcript with merged or split words still maps onto the text's tokens
    split = [{"word": "It", "start": 0.1, "end": 0.2}, {"word": "co", "start": 0.3, "end": 0.4},
             {"word": "st", "start": 0.4, "end": 0.5}, {"word": "really.", "start": 2.0, "end": 2.4}]  # fmt: skip
    _, starts, _ = map_aligned_words(text, split)
    assert starts[0] == 0.1 and starts[1] == pytest.approx(0.3) and starts[-1] == 2.0
