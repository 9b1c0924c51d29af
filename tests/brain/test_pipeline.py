import pickle

import numpy as np
import pytest

from brainrl.brain.base import BrainMap, Failed
from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from tests.helpers import CountingSpeech, LengthBrain


def make_pipeline(tmp_path, **model_kwargs):
    config = PipelineConfig(cache_dir=str(tmp_path / "maps"))
    return BrainPipeline(config, speech=CountingSpeech(out_dir=tmp_path / "audio"), model=LengthBrain(**model_kwargs))


def test_batch_goes_through_model_once_and_keeps_order(tmp_path):
    pipe = make_pipeline(tmp_path)
    texts = ["one two", "one two three four", "a b c"]
    maps = pipe(texts)
    assert pipe.model.calls == [3]
    assert [m.data[0, 1000] for m in maps] == pytest.approx([0.02, 0.04, 0.03])
    assert all(m.provenance["stimulus"]["speech_engine"] == "counting" for m in maps)


def test_empty_whitespace_and_failing_items_are_failed_not_zero(tmp_path):
    pipe = make_pipeline(tmp_path, fail_words="REFUSE")
    maps = pipe(["", "   \n\t ", "\x00\x01", "fine text", "FAILSPEECH now", "REFUSE this"])
    assert [type(m).__name__ for m in maps] == ["Failed", "Failed", "Failed", "BrainMap", "Failed", "Failed"]
    assert "empty" in maps[0].reason and "empty" in maps[2].reason
    assert "speech" in maps[4].reason
    assert maps[5].reason == "model refused"


def test_memory_and_disk_cache_hits(tmp_path):
    pipe = make_pipeline(tmp_path)
    first = pipe(["hello there", "hello there", "general kenobi"])
    assert pipe.model.calls == [2]  # the duplicate text is predicted once
    again = pipe(["general kenobi"])
    assert pipe.model.calls == [2] and pipe.counters["memory_hits"] == 1
    np.testing.assert_array_equal(again[0].data, first[2].data)
    # a new pipeline on the same folder reads the disk cache
    fresh = make_pipeline(tmp_path)
    out = fresh(["hello there"])
    assert fresh.model.calls == [] and fresh.counters["disk_hits"] == 1
    np.testing.assert_array_equal(out[0].data, first[0].data)


def test_model_crash_fails_the_batch_items(tmp_path):
    pipe = make_pipeline(tmp_path)

    def boom(stimuli):
        raise RuntimeError("GPU fell over")

    pipe.model.predict = boom
    out = pipe(["a b", "c d"])
    assert all(isinstance(o, Failed) and "GPU fell over" in o.reason for o in out)


def test_config_rejects_unknown_backends_with_suggestion():
    with pytest.raises(KeyError, match="synthetic"):
        PipelineConfig(model="synthetc")
    with pytest.raises(KeyError, match="espeak"):
        PipelineConfig(speech="espek")


def test_config_pickles_and_keys_change_with_content():
    a, b = PipelineConfig(), PipelineConfig(model_kwargs={"seed": 1})
    assert pickle.loads(pickle.dumps(a)).key() == a.key() != b.key()


def test_brainmap_validates_shape():
    with pytest.raises(ValueError, match="20484"):
        BrainMap(np.zeros((3, 100)))


def test_chunked_speech_gives_the_same_maps_and_failures_as_one_batch(tmp_path):
    texts = [f"text number {i} " + "word " * (i % 5) for i in range(11)]
    texts[3], texts[8], texts[9] = "", "FAILSPEECH here", "REFUSE this one"
    whole = BrainPipeline(PipelineConfig(cache_dir="", memory_items=0, speech_chunk=0),
                          speech=CountingSpeech(out_dir=tmp_path / "a"), model=LengthBrain(fail_words="REFUSE"))
    chunked = BrainPipeline(PipelineConfig(cache_dir="", memory_items=0, speech_chunk=4),
                            speech=CountingSpeech(out_dir=tmp_path / "b"), model=LengthBrain(fail_words="REFUSE"))
    a, b = whole(texts), chunked(texts)
    assert whole.model.calls == [9] and chunked.model.calls == [3, 4, 2]  # chunks 0-3, 4-7, 8-10 less failed speech
    assert [type(m).__name__ for m in a] == [type(m).__name__ for m in b]
    assert [type(m).__name__ for m in b].count("Failed") == 3 and "speech" in b[8].reason
    for x, y in zip(a, b):
        if isinstance(x, BrainMap):
            np.testing.assert_array_equal(x.data, y.data)
    assert whole.counters["failed"] == chunked.counters["failed"] == 3


def test_next_chunk_is_spoken_while_the_model_predicts(tmp_path):
    """The model's first call blocks until speech of the second chunk has started: only an overlapping
    pipeline gets past it (a sequential one would time out and fail the chunk)."""
    import threading

    second_chunk_spoken = threading.Event()

    class SignallingSpeech(CountingSpeech):
        def synthesize(self, texts):
            if texts and texts[0].startswith("second"):
                second_chunk_spoken.set()
            return super().synthesize(texts)

    class WaitingBrain(LengthBrain):
        def predict(self, stimuli):
            if not self.calls and not second_chunk_spoken.wait(timeout=10):
                raise RuntimeError("speech did not overlap with prediction")
            return super().predict(stimuli)

    pipe = BrainPipeline(PipelineConfig(cache_dir="", memory_items=0, speech_chunk=2),
                         speech=SignallingSpeech(out_dir=tmp_path), model=WaitingBrain())
    out = pipe(["first a", "first b", "second a", "second b"])
    assert all(isinstance(m, BrainMap) for m in out) and pipe.model.calls == [2, 2]
    with pytest.raises(ValueError, match="speech_chunk"):
        PipelineConfig(speech_chunk=-1)


def test_an_engine_without_audio_is_not_chunked(tmp_path):
    """text-only makes no audio, so there is nothing to overlap: the model gets the whole batch in one call
    (a text model such as the surrogate pays a fixed cost per call), whatever speech_chunk says."""
    from brainrl.stimulus import get_speech_engine

    pipe = BrainPipeline(PipelineConfig(speech="text-only", cache_dir="", memory_items=0, speech_chunk=4),
                         speech=get_speech_engine("text-only"), model=LengthBrain())
    out = pipe([f"text number {i}" for i in range(11)])
    assert all(isinstance(m, BrainMap) for m in out) and pipe.model.calls == [11]
