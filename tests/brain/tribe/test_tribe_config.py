"""TribeConfig: devices TRIBE's extractors accept, and the feature cache's place, key and cap."""

import os

import pytest

from brainrl.brain.tribe import TribeConfig
from brainrl.brain.tribe.engine import TribeEngine

from tribe_helpers import make_stimulus


@pytest.mark.parametrize("device,extractor,index", [("cpu", "cpu", None), ("cuda", "cuda", None),
                                                    ("cuda:1", "cuda", 1), ("auto", "auto", None)])
def test_cuda_n_runs_as_cuda_on_that_device(device, extractor, index):
    config = TribeConfig(device=device)
    assert config.extractor_device == extractor and config.cuda_index == index
    update = config.tribe_config_update()
    # neuralset's extractors validate device against auto|cpu|cuda|accelerate: never "cuda:1"
    assert {update[f"data.{m}.device"] for m in ("text_feature", "audio_feature", "video_feature.image")} == {extractor}


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda1", "", "mps:0"])
def test_bad_device_is_refused_with_the_choices(device):
    with pytest.raises(ValueError, match=r"'cpu', 'cuda', 'cuda:N' or 'auto'"):
        TribeConfig(device=device)


def test_predict_path_choices_and_what_direct_refuses():
    assert TribeConfig().predict_path == "tribe"
    direct = TribeConfig(predict_path="direct")
    # the direct path's maps equal TRIBE's predict's (tribe_real tier), but it is recorded in the identity
    assert direct.result_settings()["predict_path"] == "direct" and "predict_path" not in TribeConfig().result_settings()
    assert TribeConfig.from_dict(direct.to_dict()) == direct
    with pytest.raises(ValueError, match="predict_path must be one of"):
        TribeConfig(predict_path="fast")
    for settings in ({"speech_path": "reference"}, {"contexts": "tribe"}):
        with pytest.raises(ValueError, match="need its DataFrame"):
            TribeConfig(predict_path="direct", **settings)


def test_cache_under_brainrl_cache_root_keyed_by_mode_and_dtype(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINRL_CACHE", str(tmp_path / "root"))
    fp32 = TribeEngine(TribeConfig(device="cpu"))
    bf16 = TribeEngine(TribeConfig(device="cpu", dtype="bfloat16", allow_bf16=True))
    ref = TribeEngine(TribeConfig(device="cpu", text_features="reference"))
    assert fp32.cache_folder == tmp_path / "root" / "tribe"
    assert len({fp32.tribe_cache, bf16.tribe_cache, ref.tribe_cache}) == 3
    assert fp32.tribe_cache.name == "tribe-one-pass-batched-float32"
    assert bf16.tribe_cache.name == "tribe-one-pass-batched-bfloat16"


def test_float32_parts_keep_named_parts_in_float32_under_bf16(monkeypatch, tmp_path):
    monkeypatch.setenv("BRAINRL_CACHE", str(tmp_path / "root"))
    mixed = TribeConfig(dtype="bfloat16", allow_bf16=True, float32_parts=["fusion", "text", "fusion"])
    assert mixed.float32_parts == ("fusion", "text")  # sorted, once each: one identity per choice
    assert [mixed.part_dtype(p) for p in ("text", "audio", "fusion")] == ["float32", "bfloat16", "float32"]
    assert TribeConfig(dtype="bfloat16", allow_bf16=True, float32_parts="fusion").float32_parts == ("fusion",)
    # it changes the numbers: recorded in the identity and the feature cache's name, round-trips through a dict
    assert mixed.result_settings()["float32_parts"] == ["fusion", "text"]
    assert "float32_parts" not in TribeConfig().result_settings()
    assert TribeConfig.from_dict(mixed.to_dict()) == mixed
    assert TribeEngine(TribeConfig(**{**mixed.to_dict(), "device": "cpu"})).tribe_cache.name \
        == "tribe-one-pass-batched-bfloat16-fusion32-text32"
    with pytest.raises(ValueError, match=r"parts of \('text', 'audio', 'fusion'\); got \['head'\]"):
        TribeConfig(dtype="bfloat16", allow_bf16=True, float32_parts=["head"])
    with pytest.raises(ValueError, match="only applies to dtype='bfloat16'"):
        TribeConfig(float32_parts=["fusion"])
    with pytest.raises(ValueError, match="unknown part"):
        mixed.part_dtype("video")


def test_matmul_precision_is_recorded_and_set_only_during_a_call(tribe_double, tmp_path, checkpoint_dir, monkeypatch):
    import torch

    high = TribeConfig(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "c"), device="cpu",
                       matmul_precision="high")
    assert high.result_settings()["matmul_precision"] == "high" and "matmul_precision" not in TribeConfig().result_settings()
    assert high.precision_label == "float32-tf32"
    with pytest.raises(ValueError, match=r"matmul_precision must be one of \('highest', 'high'\)"):
        TribeConfig(matmul_precision="medium")
    engine = TribeEngine(high)
    seen = []
    original = TribeEngine._predict_tribe
    monkeypatch.setattr(TribeEngine, "_predict_tribe",
                        lambda self, *a: seen.append(torch.backends.cuda.matmul.allow_tf32) or original(self, *a))
    before = torch.backends.cuda.matmul.allow_tf32  # a process-wide flag (monkeypatch cannot restore it)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert not isinstance(engine.predict([make_stimulus("One short text here.", tmp_path / "speech")])[0], str)
        assert seen == [True] and torch.backends.cuda.matmul.allow_tf32 is False  # TF32 inside the call, restored after
        torch.backends.cuda.matmul.allow_tf32 = True  # a process that turned TF32 on itself
        TribeEngine(TribeConfig(**{**high.to_dict(), "matmul_precision": "highest"})).predict(
            [make_stimulus("Another text.", tmp_path / "speech")])
        assert seen == [True, False] and torch.backends.cuda.matmul.allow_tf32 is True  # the reference: true fp32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_bf16_needs_explicit_consent():
    with pytest.raises(ValueError, match="parity check"):
        TribeConfig(dtype="bfloat16")
    with pytest.raises(ValueError, match="cache_max_gb"):
        TribeConfig(cache_max_gb=-1)


def test_cache_cap_empties_the_feature_cache(tribe_double, tmp_path, checkpoint_dir):
    stimuli = [make_stimulus(t, tmp_path / "speech") for t in ("One short text here.", "And another one, slightly longer.")]
    keep = TribeEngine(TribeConfig(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "keep"), device="cpu"))
    keep.predict(stimuli)
    assert keep.cache_bytes() > 0 and keep.cache_clears == 0  # the audio copies at least
    capped = TribeEngine(TribeConfig(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "cap"), device="cpu",
                                     cache_max_gb=0))
    first = capped.predict(stimuli)
    assert capped.cache_clears == 1 and capped.cache_bytes() == 0
    second = capped.predict(stimuli)  # recomputed from an empty cache: the same maps
    assert capped.cache_clears == 2
    for a, b in zip(first, second):
        assert a.shape == b.shape and abs(a - b).max() < 1e-5
    assert not os.listdir(capped.tribe_cache)


def test_tribe_contexts_run_tribes_transforms_on_the_fast_path(tribe_double, tmp_path, checkpoint_dir, monkeypatch):
    """contexts="tribe": brainrl's words and audio, contexts from TRIBE's own get_audio_and_text_events."""
    import tribev2.demo_utils as demo

    calls = []
    original = demo.get_audio_and_text_events
    monkeypatch.setattr(demo, "get_audio_and_text_events", lambda events, **kw: calls.append(events.copy()) or original(events, **kw))
    stimuli = [make_stimulus("One short text here.", tmp_path / "speech")]
    engine = TribeEngine(TribeConfig(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / "c"), device="cpu",
                                     contexts="tribe"))
    (brain_map,) = engine.predict(stimuli)
    assert not isinstance(brain_map, str) and len(calls) == 1
    words = calls[0][calls[0]["type"] == "Word"]
    assert "context" not in words.columns or words["context"].isna().all()  # TRIBE builds them, not brainrl
    assert engine.identity()["contexts"] == "tribev2-transforms"
    assert TribeEngine(TribeConfig(device="cpu")).identity()["contexts"] == "brainrl-direct"
    with pytest.raises(ValueError, match="contexts must be one of"):
        TribeConfig(contexts="spacy")


def test_in_memory_audio_only_where_the_batched_audio_path_stands_in():
    """The direct path reads audio from memory only when the batched audio features can serve the extractor;
    another audio extractor gets the wav files TRIBE's own code reads."""
    from types import SimpleNamespace

    from brainrl.brain.tribe.audio_frontend import FbankConfig

    c = FbankConfig()
    Wav2VecBert = type("Wav2VecBert", (), {})
    SeamlessM4TFeatureExtractor = type("SeamlessM4TFeatureExtractor", (), {})
    extractor = Wav2VecBert()
    extractor.layer_type, extractor.device = "transformer", "cuda"
    extractor.feature_extractor = SeamlessM4TFeatureExtractor()
    for name, value in (("sampling_rate", c.sample_rate), ("num_mel_bins", c.num_mel_bins), ("stride", c.stride),
                        ("padding_value", c.padding_value)):
        setattr(extractor.feature_extractor, name, value)
    other = type("MelSpectrum", (), {})()

    def engine(extractor, **kwargs):
        e = TribeEngine(TribeConfig(**kwargs))
        e._model = SimpleNamespace(data=SimpleNamespace(audio_feature=extractor))
        return e

    assert engine(extractor, predict_path="direct").in_memory_audio
    assert not engine(extractor, predict_path="tribe").in_memory_audio
    assert not engine(extractor, predict_path="direct", audio_features="reference").in_memory_audio
    assert not engine(other, predict_path="direct").in_memory_audio
    assert not engine(None, predict_path="direct").in_memory_audio
