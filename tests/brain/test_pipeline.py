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
