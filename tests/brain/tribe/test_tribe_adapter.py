"""TribeBrainModel in-process against the tribev2 test double: events, batching, split, identity."""

import numpy as np
import pytest

from brainrl.brain import BRAIN_MODELS, BrainMap, Failed, get_brain_model
from brainrl.brain.tribe import DEFAULT_REVISION, TribeBrainModel
from brainrl.brain.base import MAP_ATOL, MAP_RTOL

from tribe_helpers import assert_matches_double, make_stimulus

TEXTS = [
    "The storm rolled in over the harbour at dusk.",
    "Short one.",
    "Numbers like 1969 and words like don't appear here, with commas; and semicolons.",
    "A fourth text that runs a little longer than the others so it spans more seconds of audio.",
]


def _model(tmp_path, checkpoint_dir, **kwargs):
    return TribeBrainModel(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "cache"), device="cpu", **kwargs)


def test_registered_as_tribe():
    assert "tribe" in BRAIN_MODELS and BRAIN_MODELS.factory("tribe") is TribeBrainModel


def test_batch_predict_splits_per_stimulus(tribe_double, tmp_path, checkpoint_dir):
    stimuli = [make_stimulus(t, tmp_path / "speech") for t in TEXTS]
    model = get_brain_model("tribe", checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "c"), device="cpu")
    maps = model.predict(stimuli)
    assert len(maps) == len(stimuli) and all(isinstance(m, BrainMap) for m in maps)
    for stimulus, brain_map in zip(stimuli, maps):
        assert_matches_double(brain_map.data, stimulus)
        assert brain_map.n_frames == int(np.ceil(stimulus.duration))
        assert brain_map.data.dtype == np.float32
        assert brain_map.provenance["brain_model"]["speech_path"] == "fast"
        assert brain_map.provenance["n_words"] == len(stimulus.words)
    # a different order gives the same per-item maps (no mix-up through batching)
    again = model.predict(stimuli[::-1])
    for a, b in zip(maps[::-1], again):
        np.testing.assert_allclose(a.data, b.data, rtol=MAP_RTOL, atol=MAP_ATOL)


def test_one_predict_call_per_chunk_and_models_stay_resident(tribe_double, tmp_path, checkpoint_dir, monkeypatch):
    from neuralset.extractors import text as ns_text
    from tribev2 import main as tribe_main
    from tribev2.demo_utils import TribeModel

    calls = []
    original = TribeModel.predict
    monkeypatch.setattr(TribeModel, "predict", lambda self, events, verbose=True: calls.append(events) or original(self, events, verbose))
    stimuli = [make_stimulus(f"text number {i} with words", tmp_path) for i in range(5)]
    model = _model(tmp_path, checkpoint_dir, max_stimuli_per_call=3)
    assert all(model.predict(stimuli))
    assert [df.timeline.nunique() for df in calls] == [3, 2]
    model.predict(stimuli[:2])
    assert sum(ns_text.MODEL_LOADS.values()) == 1 and tribe_main.LOADS["audio"] == 1  # loaded once, never freed
    engine_model = model._engine._model
    assert engine_model.data.num_workers == 0 and engine_model.data.text_feature.device == "cpu"
    assert next(engine_model.data.text_feature.model.parameters()).dtype.is_floating_point
    assert str(next(engine_model.data.text_feature.model.parameters()).dtype) == "torch.float32"  # fp32 reference
    # without the residency patch TRIBE frees the text model after prepare, so new texts reload it
    engine_model.predict(calls[-1])  # frees the resident model after prepare
    assert model.predict([make_stimulus("brand new words to embed", tmp_path)])
    assert sum(ns_text.MODEL_LOADS.values()) == 2


def test_identity_records_revision_path_dtype(tribe_double, tmp_path, checkpoint_dir):
    model = TribeBrainModel(cache_folder=str(tmp_path), device="cpu")
    ident = model.identity()
    assert ident["revision"] == DEFAULT_REVISION == "f894e783020944dcd96e5568550afe2aa9743f9f"
    assert ident["speech_path"] == "fast" and ident["dtype"] == "float32" and ident["repo_id"] == "facebook/tribev2"
    local = _model(tmp_path, checkpoint_dir).identity()
    assert local["revision"].startswith("local:")
    with pytest.raises(ValueError, match="allow_bf16"):
        TribeBrainModel(dtype="bfloat16")
    assert TribeBrainModel(dtype="bfloat16", allow_bf16=True).identity()["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="Unknown TribeConfig keys"):
        TribeBrainModel(revison="abc")


def test_speech_path_is_checked_and_reference_uses_tribe_transforms(tribe_double, tmp_path, checkpoint_dir):
    fast = _model(tmp_path, checkpoint_dir)
    ref_stim = make_stimulus("gtts made this", tmp_path, engine="gtts-whisperx")
    [failed] = fast.predict([ref_stim])
    assert isinstance(failed, Failed) and "speech_path='reference'" in failed.reason
    reference = _model(tmp_path, checkpoint_dir, speech_path="reference")
    [brain_map] = reference.predict([ref_stim])
    assert_matches_double(brain_map.data, ref_stim)
    assert reference.identity()["contexts"] == "tribev2-transforms"
    [refused] = reference.predict([make_stimulus("espeak text", tmp_path)])
    assert isinstance(refused, Failed) and "gtts-whisperx" in refused.reason


def test_bad_item_fails_alone(tribe_double, tmp_path, checkpoint_dir, monkeypatch):
    monkeypatch.setenv("TRIBEV2_DOUBLE_RAISE_ON", "poison")
    stimuli = [make_stimulus(t, tmp_path) for t in ("fine text", "a poison text", "also fine")]
    maps = _model(tmp_path, checkpoint_dir).predict(stimuli)
    assert isinstance(maps[0], BrainMap) and isinstance(maps[2], BrainMap)
    assert isinstance(maps[1], Failed) and "injected failure" in maps[1].reason
    assert_matches_double(maps[2].data, stimuli[2])


def test_missing_audio_is_a_failed_item(tribe_double, tmp_path, checkpoint_dir):
    good = make_stimulus("has audio", tmp_path)
    gone = make_stimulus("lost audio", tmp_path)
    gone.audio_path.unlink()
    maps = _model(tmp_path, checkpoint_dir).predict([good, gone])
    assert isinstance(maps[0], BrainMap) and isinstance(maps[1], Failed) and "no audio" in maps[1].reason


def test_hub_download_is_pinned(tribe_double, tmp_path, monkeypatch):
    import huggingface_hub

    seen = {}

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        seen.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = TribeBrainModel(cache_folder=str(tmp_path), device="cpu")
    with pytest.raises(OSError, match="offline"):
        model.predict([make_stimulus("x y", tmp_path)])
    assert seen == {"repo_id": "facebook/tribev2", "revision": DEFAULT_REVISION, "allow_patterns": ["config.yaml", "best.ckpt"]}
