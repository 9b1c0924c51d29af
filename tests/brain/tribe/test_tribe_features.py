"""One-pass text features equal TRIBE's per-word-context computation on a small random Llama."""

import numpy as np
import pytest
import torch

from brainrl.brain.tribe.features import (
    OnePassTextFeatures,
    build_byte_bpe_tokenizer,
    concatenation_matches,
    layer_groups,
    reference_word_features,
    word_token_ids,
)

CORPUS = [
    "The old lighthouse keeper climbed the stairs every night, counting each step as the storm grew louder.",
    "She said it wasn't the money; it was the silence after the door closed that she couldn't forgive.",
    "In 1969, three astronauts flew to the moon, and millions watched the grainy pictures at home.",
    "Rivers carve valleys slowly, grain by grain, until the mountains themselves seem to bow.",
]


def test_layer_groups_match_tribe_for_llama_3b():
    assert layer_groups(28) == [[13, 15, 16, 18, 19], [21, 22, 24, 25, 27, 28]]


def test_layer_groups_generalise_to_small_models():
    groups = layer_groups(4)
    assert len(groups) == 2 and all(groups) and max(groups[1]) == 4 and min(groups[0]) >= 2
    with pytest.raises(ValueError, match="too shallow"):
        layer_groups(1, fractions=(0.5, 0.51, 0.52, 1.0))


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaModel

    tokenizer = build_byte_bpe_tokenizer(CORPUS * 3, vocab_size=400)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )
    model = LlamaModel(config).eval().float()
    return model, tokenizer


def test_word_spans_are_exact_and_match_joined_tokenization(tiny_llama):
    _, tokenizer = tiny_llama
    for text in CORPUS:
        words = text.split()
        ids, spans = word_token_ids(tokenizer, words)
        assert spans[0][0] == 0 and spans[-1][1] == len(ids)
        assert all(a < b for a, b in spans) and all(spans[i][1] == spans[i + 1][0] for i in range(len(spans) - 1))
        assert concatenation_matches(tokenizer, words)
        assert tokenizer.decode(ids[slice(*spans[3])]) == " " + words[3]


def test_one_pass_equals_per_word_reference(tiny_llama):
    model, tokenizer = tiny_llama
    groups = layer_groups(model.config.num_hidden_layers)
    texts_words = [t.split() for t in CORPUS]
    one_pass = OnePassTextFeatures(model, tokenizer, groups)(texts_words, batch_size=3)  # padding across texts
    correlations, max_abs = [], 0.0
    for words, fast in zip(texts_words, one_pass):
        ref = reference_word_features(model, tokenizer, words, groups, batch_size=4)
        assert fast.shape == ref.shape == (len(words), 2, 64)
        for w in range(len(words)):
            correlations.append(np.corrcoef(fast[w].ravel(), ref[w].ravel())[0, 1])
        max_abs = max(max_abs, float(np.abs(fast - ref).max()))
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)
    assert np.median(correlations) > 0.999 and min(correlations) > 0.999
    assert max_abs < 1e-4


def test_one_pass_detects_a_broken_equivalence(tiny_llama):
    """The comparison can fail: features of the word-final token only are not the span mean."""
    model, tokenizer = tiny_llama
    groups = layer_groups(model.config.num_hidden_layers)
    words = CORPUS[1].split()
    ref = reference_word_features(model, tokenizer, words, groups)
    ids, spans = word_token_ids(tokenizer, words)
    with torch.inference_mode():
        hidden = torch.stack(model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states)
    last_token = np.stack([torch.stack([hidden[g, 0, e - 1].mean(0) for g in groups]).numpy() for _, e in spans])
    multi = [i for i, (s, e) in enumerate(spans) if e - s > 1]
    assert multi, "the test text needs a multi-token word"
    assert np.abs(last_token[multi] - ref[multi]).max() > 1e-3


def test_piece_token_ids_batch_call_equals_one_encode_per_piece():
    from brainrl.brain.tribe.features import build_byte_bpe_tokenizer, piece_token_ids

    pieces = ["The", " old", " lighthouse", " keeper,", " said:", " \u201cno\u201d", " 1969", "\u2014", " ok?", " \u00e9t\u00e9"]
    tokenizer = build_byte_bpe_tokenizer(["The old lighthouse keeper said no in 1969. OK?"] * 4, vocab_size=300)
    assert tokenizer.is_fast
    expected_ids, expected_offsets = [], [0]
    for piece in pieces:
        expected_ids.extend(tokenizer.encode(piece, add_special_tokens=False))
        expected_offsets.append(len(expected_ids))
    assert piece_token_ids(tokenizer, pieces) == (expected_ids, expected_offsets)

    class SlowTokenizer:  # no batch call: one encode per piece
        def encode(self, text, add_special_tokens=False):
            return [ord(c) for c in text]

    assert piece_token_ids(SlowTokenizer(), ["ab", "c"]) == ([97, 98, 99], [0, 2, 3])
    assert piece_token_ids(tokenizer, []) == ([], [0])
