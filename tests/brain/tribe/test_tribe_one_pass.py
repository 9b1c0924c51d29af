"""One-pass text features inside TRIBE's text extractor (the neuralset double on a tiny random Llama):
same per-word features and predictions as the per-word reference, far fewer Llama forwards."""

import math

import numpy as np
import pytest

from brainrl.brain import BrainMap
from brainrl.brain.base import MAP_ATOL, MAP_RTOL
from brainrl.brain.cache import map_key
from brainrl.brain.tribe import TribeBrainModel
from brainrl.brain.tribe.events import build_events
from brainrl.brain.tribe.one_pass_extractor import (
    OnePassStats,
    make_one_pass_get_data,
    plan_runs,
    text_infra_method,
    unsupported_reason,
)

from tribe_helpers import make_stimulus

TEXTS = [
    "The storm rolled in over the harbour at dusk, and nobody saw the lights.",
    "Short one.",
    "Numbers like 1969 and words like don't appear here, with commas; and semicolons.",
    "A fourth text that runs a little longer than the others, so it spans more seconds of speech audio.",
]


def _model(tmp_path, checkpoint_dir, name, **kwargs):
    return TribeBrainModel(checkpoint_dir=str(checkpoint_dir), cache_folder=str(tmp_path / name), device="cpu", **kwargs)


def _count_forwards(model):
    engine = model._engine.load()
    counter = {"n": 0}
    engine._model.data.text_feature.model.register_forward_pre_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
    return engine, counter


def test_one_pass_predictions_equal_reference_with_one_forward(tribe_double, tmp_path, checkpoint_dir):
    from neuralset.events import extract_words
    from tribev2.demo_utils import TEXT_COLUMNS

    stimuli = [make_stimulus(t, tmp_path / "speech") for t in TEXTS]
    n_words = sum(len(s.words) for s in stimuli)
    fast, ref = _model(tmp_path, checkpoint_dir, "fast"), _model(tmp_path, checkpoint_dir, "ref", text_features="reference")
    fast_engine, fast_forwards = _count_forwards(fast)
    ref_engine, ref_forwards = _count_forwards(ref)
    fast_maps, ref_maps = fast.predict(stimuli), ref.predict(stimuli)
    assert all(isinstance(m, BrainMap) for m in fast_maps + ref_maps)

    # Llama forwards: TRIBE's batches of 4 words vs one pass over all texts (text_batch_size 32)
    assert ref_forwards["n"] == math.ceil(n_words / 4) and n_words > 30
    assert fast_forwards["n"] == 2  # the pass, plus TRIBE's own computation of one word (the self-check)
    stats = fast_engine.text_stats.as_dict()
    check = stats.pop("self_check")
    assert stats.pop("seconds") > 0
    assert stats == {"forwards": 1, "runs": len(TEXTS), "words": n_words, "fallback_words": 0, "fallback_reasons": {}}
    assert check["shape"] == [7, 48] and check["max_abs_diff"] < 1e-4 * check["max_abs_feature"]
    assert ref_engine.text_stats.words == 0  # the reference mode never touched the one-pass path

    # per-word features as TRIBE caches them (n_cached_layers, d), read back without new forwards
    events = extract_words(build_events(stimuli, [f"t{i}" for i in range(len(stimuli))],
                                        [s.audio_path for s in stimuli], with_context=True))
    fast_words = [np.asarray(a) for a in fast_engine._model.data.text_feature._get_data(events)]
    ref_words = [np.asarray(a) for a in ref_engine._model.data.text_feature._get_data(events)]
    assert (fast_forwards["n"], ref_forwards["n"]) == (2, math.ceil(n_words / 4))
    assert len(fast_words) == n_words and fast_words[0].shape == (7, 48)  # 6 layers + embeddings, d=48
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(fast_words, ref_words)]
    assert np.median(r) > 0.999 and min(r) > 0.999
    assert max(float(np.abs(a - b).max()) for a, b in zip(fast_words, ref_words)) < 1e-4

    # predictions: the text-driven columns agree within float tolerance, everything else exactly
    for a, b in zip(fast_maps, ref_maps):
        np.testing.assert_allclose(a.data[:, TEXT_COLUMNS], b.data[:, TEXT_COLUMNS], rtol=1e-4, atol=1e-5)
        other = np.ones(a.data.shape[1], bool)
        other[TEXT_COLUMNS] = False
        np.testing.assert_allclose(a.data[:, other], b.data[:, other], rtol=MAP_RTOL, atol=MAP_ATOL)
        assert np.abs(a.data[:, TEXT_COLUMNS]).max() > 0.01  # the features did reach the prediction
    # the test can fail: features of another text change the text columns
    swapped = fast.predict([make_stimulus("The storm rolled in over the harbour at dawn, and nobody saw the lights.",
                                          tmp_path / "other")])[0]
    assert not np.allclose(swapped.data[:, TEXT_COLUMNS], fast_maps[0].data[: swapped.n_frames, TEXT_COLUMNS], atol=1e-3)


def test_modes_differ_in_identity_cache_key_and_feature_cache(tribe_double, tmp_path, checkpoint_dir):
    fast, ref = _model(tmp_path, checkpoint_dir, "c"), _model(tmp_path, checkpoint_dir, "c", text_features="reference")
    ident_fast, ident_ref = fast.identity(), ref.identity()
    assert ident_fast["text_features"].startswith("one-pass") and ident_ref["text_features"].startswith("per-word")
    stimulus = make_stimulus("same words both ways", tmp_path)
    assert map_key(stimulus, ident_fast) != map_key(stimulus, ident_ref)
    assert fast._engine.tribe_cache != ref._engine.tribe_cache  # TRIBE's text uids do not say how features were made
    assert _model(tmp_path, checkpoint_dir, "r", speech_path="reference").identity()["text_features"].startswith("per-word")
    with pytest.raises(ValueError, match="text_features must be one of"):
        TribeBrainModel(text_features="fast")


def test_sliding_windows_start_new_runs_and_stay_equal(tribe_double, tmp_path, checkpoint_dir):
    from tribev2.demo_utils import TEXT_COLUMNS

    stimuli = [make_stimulus(t, tmp_path / "speech") for t in TEXTS[:2]]
    fast = _model(tmp_path, checkpoint_dir, "fast", max_context_words=5)
    ref = _model(tmp_path, checkpoint_dir, "ref", max_context_words=5, text_features="reference")
    for a, b in zip(fast.predict(stimuli), ref.predict(stimuli)):
        np.testing.assert_allclose(a.data[:, TEXT_COLUMNS], b.data[:, TEXT_COLUMNS], rtol=1e-4, atol=1e-5)
    stats = fast._engine.text_stats
    # text 0 has 13 words: contexts 1-5 nest (one run), then each window drops a word (8 more runs)
    assert stats.runs == 1 + (len(stimuli[0].words) - 5) + 1 and stats.fallback_words == 0 and stats.forwards == 1


class _Word:
    def __init__(self, text, context, start, timeline):
        self.text, self.context, self.start, self.timeline, self.duration = text, context, start, timeline, 0.3


def _events():
    words = "Rivers carve valleys slowly, grain by grain.".split()
    events = [_Word(w, " ".join(words[: i + 1]), 0.5 * i, "a") for i, w in enumerate(words)]
    events += [_Word("Second", "Second", 0.0, "b"), _Word("text.", "Second text.", 0.4, "b")]
    events.append(_Word("t", "I don't", 0.0, "c"))  # the target cuts the token "'t": one pass cannot serve it
    events.append(_Word("Else", "Nothing Else", 0.0, "d"))  # context reset: its own run with a prefix
    return events


def test_plan_runs_groups_by_timeline_and_nesting():
    events = _events()
    rng = np.random.default_rng(0)
    shuffled = [events[i] for i in rng.permutation(len(events))]  # exca hands missing events over shuffled
    runs, rejected = plan_runs(shuffled + [_Word("x", "does not end with it", 0, "e")])
    assert rejected == {len(shuffled): "context does not end with the word"}
    texts = sorted(run.text for run in runs)
    assert texts == sorted(["Rivers carve valleys slowly, grain by grain.", "Second text.", "I don't", "Nothing Else"])
    for run in runs:
        for index, prefix_end, context_end in run.members:
            event = shuffled[index]
            assert run.text[:context_end] == event.context
            assert run.text[:prefix_end] == event.context[: -len(event.text)].rstrip()


def test_replacement_get_data_equals_original_and_falls_back_per_event(tribe_double, tmp_path):
    import torch
    from neuralset.extractors.text import HuggingFaceText
    from tribev2.demo_utils import build_text_model

    extractor = HuggingFaceText(model_name=build_text_model(tmp_path / "m"), device="cpu", batch_size=4,
                                layers=[0.5, 0.75, 1.0], layer_aggregation="group_mean", cache_n_layers=20)
    extractor.model.float()
    forwards = {"n": 0}
    extractor.model.register_forward_pre_hook(lambda *_: forwards.__setitem__("n", forwards["n"] + 1))
    imethod = text_infra_method(extractor)
    original = imethod.method
    events = _events()
    reference = list(original(extractor, events))
    assert forwards["n"] == math.ceil(len(events) / 4)
    forwards["n"] = 0
    stats = OnePassStats()
    fast = list(make_one_pass_get_data(original, 32, stats)(extractor, events))
    assert len(fast) == len(events)
    for a, b in zip(fast, reference):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert stats.fallback_words == 1 and "differs from the word pieces" in next(iter(stats.fallback_reasons))
    # one pass for 3 runs, one reference batch for the odd word, one for the self-check
    assert stats.forwards == 1 and forwards["n"] == 3 and stats.self_check["max_abs_diff"] < 1e-5
    with torch.no_grad():
        extractor.contextualized = False
        assert unsupported_reason(extractor) == "contextualized=False"


def test_structure_check_names_the_fix():
    class NotAnExtractor:
        def _get_data(self, events):
            yield from ()

    with pytest.raises(TypeError, match="text_features='reference'"):
        text_infra_method(NotAnExtractor())


def test_one_pass_without_cache_n_layers_yields_grouped_features(tribe_double, tmp_path, checkpoint_dir):
    """TRIBE v2 mini / tribev2's default config leave cache_n_layers unset: neuralset then caches grouped
    features, and so must one-pass (this failed every item and left wrong arrays in the cache)."""
    stimuli = [make_stimulus(t, tmp_path / "speech") for t in TEXTS]
    kwargs = {"config_update": {"data.text_feature.cache_n_layers": None}}
    fast = _model(tmp_path, checkpoint_dir, "fast-nocache", **kwargs)
    ref = _model(tmp_path, checkpoint_dir, "ref-nocache", text_features="reference", **kwargs)
    fast_maps, ref_maps = fast.predict(stimuli), ref.predict(stimuli)
    assert all(isinstance(m, BrainMap) for m in fast_maps + ref_maps)
    for a, b in zip(fast_maps, ref_maps):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-5)
    assert fast._engine.text_stats.self_check["shape"] == [2, 48]  # grouped (2 groups, d=48), not (7, 48)
