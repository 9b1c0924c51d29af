"""The one-pass patch against the real neuralset 0.0.2 + exca (in the dev extra; skipped only where they are
not installed): a tiny random Llama saved locally stands in for Llama-3.2-3B. 24 layers (25 hidden states),
so that ``cache_n_layers=20`` really sub-selects, and ``cache_n_layers=None`` (TRIBE v2 mini, tribev2's
default config) makes neuralset group the layers before caching."""

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from brainrl.brain.tribe.features import build_byte_bpe_tokenizer
from brainrl.brain.tribe.one_pass_extractor import OnePassStats, one_pass_text_features

from tribe_helpers import is_double_module as _is_double_module

TEXTS = [
    "The old lighthouse keeper climbed the stairs every night, counting each step.",
    "She said it wasn't the money; it was the silence after the door closed.",
    "Rivers carve valleys slowly, grain by grain, until the mountains bow.",
]


@pytest.fixture
def real_text_extractor_class(monkeypatch):
    for name in [m for m in sys.modules if _is_double_module(m) and m.split(".")[0] != "tribev2"]:
        monkeypatch.delitem(sys.modules, name)  # a double imported earlier must not stand in here
    neuralset = pytest.importorskip("neuralset")
    if getattr(neuralset, "IS_TEST_DOUBLE", False):
        pytest.skip("only the neuralset test double is importable")
    from neuralset.extractors.base import HuggingFaceMixin
    from neuralset.extractors.text import HuggingFaceText

    monkeypatch.setattr(HuggingFaceMixin, "repo_exists", lambda self: True)  # local folder, no hub lookup
    return HuggingFaceText


@pytest.mark.parametrize("cache_n_layers", [20, None])
def test_real_hugging_face_text_one_pass_equals_per_word(real_text_extractor_class, tmp_path, cache_n_layers):
    from transformers import LlamaConfig, LlamaModel

    tokenizer = build_byte_bpe_tokenizer(TEXTS * 3, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=24,
                                   num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    rows = [dict(type="Word", text=w, start=0.5 * i, duration=0.4, timeline=f"t{k}", subject="s",
                 context=" ".join(text.split()[: i + 1]))
            for k, text in enumerate(TEXTS) for i, w in enumerate(text.split())]
    frame = pd.DataFrame(rows)

    def extractor(name):  # TRIBE's settings (tribev2.md section 2.1)
        ext = real_text_extractor_class(model_name=str(tmp_path / "tiny"), device="cpu", batch_size=4,
                                        layers=[0.5, 0.75, 1.0], layer_aggregation="group_mean", cache_n_layers=cache_n_layers,
                                        infra={"folder": str(tmp_path / name), "keep_in_ram": True})
        ext.model.float()
        counter = {"n": 0}
        ext.model.register_forward_pre_hook(lambda *_: counter.__setitem__("n", counter["n"] + 1))
        return ext, counter

    (ref, ref_n), (fast, fast_n) = extractor("ref"), extractor("fast")
    ref.prepare(frame)
    stats = OnePassStats()
    with one_pass_text_features(fast, 32, stats):
        fast.prepare(frame)
    assert type(fast).__dict__["_get_data"].fget.method.__module__ == "neuralset.extractors.text"  # restored
    # one pass, plus TRIBE's own computation of one word (the self-check)
    assert ref_n["n"] == math.ceil(len(rows) / 4) and fast_n["n"] == 2 and stats.fallback_words == 0
    events = ref._event_types_helper.extract(frame)
    a = [np.asarray(x) for x in ref._get_data(events)]
    b = [np.asarray(x) for x in fast._get_data(events)]
    assert fast_n["n"] == 2  # read back from exca's cache
    cached_shape = (20, 32) if cache_n_layers == 20 else (2, 32)  # grouped before caching when unset
    assert all(x.shape == y.shape == cached_shape for x, y in zip(a, b))
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) < 1e-5
    grouped_a = [t.data for t in ref._get_timed_arrays(events, 0, 100)]
    grouped_b = [t.data for t in fast._get_timed_arrays(events, 0, 100)]
    r = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(grouped_a, grouped_b)]
    assert grouped_a[0].shape == (2, 32) and np.median(r) > 0.999
    # exca keyed the cache folder on the method name: the one-pass features sit where TRIBE reads them
    assert sorted(p.name for p in (tmp_path / "fast").iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())


@pytest.mark.parametrize("cache_n_layers", [20, None])
@pytest.mark.parametrize("layers,aggregation", [([0.5, 0.75, 1.0], "group_mean"), ([0.5, 0.75, 1.0], "mean"),
                                                ([0.5, 0.75, 1.0], "sum"), ([0.5, 0.75, 1.0], None), (0.5, None),
                                                (0.75, "mean")])
def test_layer_combination_is_the_extractors_own_aggregation(real_text_extractor_class, cache_n_layers, layers, aggregation):
    """The direct predict path averages the one-pass layer groups on the device with ``layer_combination``: the
    same numbers as the extractor's ``_aggregate_layers`` on its cached form, for every aggregation it offers."""
    from brainrl.brain.tribe.one_pass_extractor import cached_form, layer_combination, read_form

    extractor = real_text_extractor_class(model_name="unused", device="cpu", layers=layers,
                                          layer_aggregation=aggregation, cache_n_layers=cache_n_layers)
    n_selected = 20 if cache_n_layers else 25
    latents = np.random.default_rng(0).normal(size=(n_selected, 7)).astype(np.float32)
    expected = read_form(extractor, cached_form(extractor, latents))
    matrix = layer_combination(extractor, n_selected)
    got = np.einsum("gl,ld->gd" if matrix.ndim == 2 else "l,ld->d", matrix, latents.astype(np.float64))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
