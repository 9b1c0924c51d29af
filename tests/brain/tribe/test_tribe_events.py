"""Events built from stimuli, and predictions split back per timeline."""

from types import SimpleNamespace

import numpy as np
import pytest

from brainrl.brain.tribe.events import build_events, content_audio_path, split_by_timeline, word_contexts
from brainrl.stimulus import Stimulus, Word

from tribe_helpers import make_stimulus


def test_word_contexts_end_with_the_word_and_respect_the_window():
    words = "one two three four five".split()
    contexts = word_contexts(words, max_context_words=3)
    assert contexts[0] == "one" and contexts[2] == "one two three" and contexts[4] == "three four five"
    assert all(c.endswith(w) for c, w in zip(contexts, words))


def test_build_events_one_timeline_per_stimulus(tmp_path):
    a = make_stimulus("Hello there, friend.", tmp_path)
    b = make_stimulus("A second text here", tmp_path)
    paths = [content_audio_path(s, tmp_path / "audio") for s in (a, b)]
    df = build_events([a, b], ["t0", "t1"], paths, with_context=True)
    assert list(df.groupby("timeline", sort=False).size()) == [4, 5]
    audio = df[df.type == "Audio"]
    assert list(audio.start) == [0.0, 0.0] and all(p.endswith(".wav") for p in audio.filepath)
    words = df[(df.type == "Word") & (df.timeline == "t0")]
    assert list(words.text) == ["Hello", "there,", "friend."]
    assert list(words.context) == ["Hello", "Hello there,", "Hello there, friend."]
    assert (df[df.type == "Word"].groupby("timeline").start.apply(lambda s: s.is_monotonic_increasing)).all()
    no_ctx = build_events([a], ["t0"], paths[:1], with_context=False)
    assert "context" not in no_ctx.columns
    with pytest.raises(ValueError, match="own timeline"):
        build_events([a, b], ["t", "t"], paths, with_context=True)


def test_audio_is_content_addressed(tmp_path):
    a = make_stimulus("same length text", tmp_path / "x")
    b = make_stimulus("same length tex2", tmp_path / "y")  # same duration, different content
    pa, pb = content_audio_path(a, tmp_path / "audio"), content_audio_path(b, tmp_path / "audio")
    assert pa != pb and pa.read_bytes() == a.audio_path.read_bytes()
    assert content_audio_path(a, tmp_path / "audio") == pa
    in_memory = make_stimulus("only a waveform", tmp_path, write_file=False)
    assert content_audio_path(in_memory, tmp_path / "audio").is_file()
    gone = Stimulus("x", [Word("x", 0, 0.1)], tmp_path / "missing.wav", 16000, 0.5, "espeak", "1")
    with pytest.raises(FileNotFoundError, match="keep_waveform"):
        content_audio_path(gone, tmp_path / "audio")


def test_unsorted_or_empty_words_are_refused(tmp_path):
    s = make_stimulus("a b c", tmp_path)
    s.words[1], s.words[2] = s.words[2], s.words[1]
    with pytest.raises(ValueError, match="not sorted"):
        build_events([s], ["t"], [s.audio_path], with_context=True)


def test_split_uses_segments_not_row_order():
    seg = lambda tl, start: SimpleNamespace(timeline=tl, start=start)  # noqa: E731
    segments = [seg("b", 1.0), seg("a", 0.0), seg("b", 0.0), seg("a", 1.0), seg("a", 2.0)]
    preds = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 20484), np.float32)
    out = split_by_timeline(preds, segments, ["a", "b", "c"])
    assert out["a"][:, 0].tolist() == [1, 3, 4] and out["b"][:, 0].tolist() == [2, 0] and "c" not in out
    with pytest.raises(ValueError, match="unknown timeline"):
        split_by_timeline(preds, segments, ["a"])
    with pytest.raises(ValueError, match="two predictions"):
        split_by_timeline(preds[:2], [seg("a", 0.0), seg("a", 0.0)], ["a"])


def test_in_memory_samples_equal_what_tribe_reads_from_the_copy(tmp_path):
    """The direct path's samples (events.tribe_audio_samples) = neuralset's Audio.read of the file
    content_audio_path writes, for a waveform kept in memory and for an audio file; nothing is written."""
    import dataclasses

    import soundfile
    import torch

    etypes = pytest.importorskip("neuralset.events.etypes")
    from brainrl.brain.tribe.events import (check_pcm16_roundtrip, content_audio_path, content_audio_target,
                                            tribe_audio_batch, tribe_audio_samples)

    check_pcm16_roundtrip()  # the conversion rule against this soundfile
    rng = np.random.default_rng(0)
    wave = np.concatenate([rng.uniform(-1, 1, 30_000), np.arange(-64, 64) / 32768, [1.0, -1.0, 1.3]]).astype(np.float32)
    in_memory = dataclasses.replace(make_stimulus("a b", tmp_path, write_file=False), waveform=wave)
    on_disk = tmp_path / "source.wav"
    soundfile.write(on_disk, rng.uniform(-0.5, 0.5, (24_000, 2)), 24000, subtype="FLOAT")
    from_file = dataclasses.replace(in_memory, text="from a file", audio_path=on_disk, sample_rate=24000, waveform=None)
    for stimulus in (in_memory, from_file):
        target = content_audio_target(stimulus, tmp_path / "audio")
        assert not target.exists()
        samples, rate, duration = tribe_audio_samples(stimulus)
        assert not target.exists()  # nothing written
        event = etypes.Audio(start=0.0, timeline="t", filepath=str(content_audio_path(stimulus, tmp_path / "audio")))
        assert (rate, duration) == (event.frequency, event.duration)
        read = event.read()
        assert samples.dtype == read.dtype == torch.float32 and samples.shape == read.shape
        assert torch.equal(samples, read)  # exact: every conversion step is exact in float32
    # a batch (waveforms joined into one copy and split again, files read on their own) = each item alone, in order
    other = dataclasses.replace(in_memory, text="another", waveform=wave[::-3].copy())
    batch = tribe_audio_batch([in_memory, from_file, other])
    for stimulus, samples in zip((in_memory, from_file, other), batch):
        assert torch.equal(samples, tribe_audio_samples(stimulus)[0])
    missing = dataclasses.replace(in_memory, text="no audio", waveform=None)
    with pytest.raises(FileNotFoundError, match="has no audio"):
        tribe_audio_samples(missing)
    with pytest.raises(FileNotFoundError, match="has no audio"):
        tribe_audio_batch([in_memory, missing])
