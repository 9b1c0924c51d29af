"""One-pass text features: every word's TRIBE text feature from a single causal pass per text.

TRIBE's text extractor runs the language model once per word, on the word's whole left context, and
averages the hidden states over the word's tokens (tribev2.md section 2.2). A causal model's state at a
token depends only on the tokens before it, so one pass over the whole text yields the same states for
every word, provided the text's tokens are the concatenation of its words' tokens. This module
tokenizes each word on its own (with its leading space) and concatenates the ids: word spans are exact
by construction, and equal the reference's spans whenever tokenizing the joined text gives the same ids
(true for byte-level BPE tokenizers that split before spaces, such as Llama 3's, on ordinary prose;
``concatenation_matches`` checks it). Texts are batched with right padding and an attention mask.

``reference_word_features`` is the per-word computation TRIBE does (contexts, no BOS, batches of 4,
right padding with the EOS id, span = the last ``n_context - n_prefix`` tokens), written from that
description for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: TRIBE's text layer settings (tribev2.md section 2.1): sub-select 20 hidden states evenly, then average
#: the groups between the layer fractions 0.5-0.75 and 0.75-1.0.
CACHE_N_LAYERS = 20
LAYER_FRACTIONS = (0.5, 0.75, 1.0)


def layer_groups(n_layers: int, cache_n_layers: int = CACHE_N_LAYERS, fractions=LAYER_FRACTIONS) -> list[list[int]]:
    """Hidden-state indices averaged into each feature group, for a model with ``n_layers`` blocks
    (``n_layers + 1`` hidden states, index 0 = embeddings).

    For Llama-3.2-3B (28 layers) this is [[13, 15, 16, 18, 19], [21, 22, 24, 25, 27, 28]]; small test
    models get the same fractions of their depth.
    """
    n_keep = min(cache_n_layers, n_layers + 1)
    selected = [int(v) for v in np.round(np.linspace(0, n_layers, n_keep))]
    bounds = [int(f * (len(selected) - 1)) for f in fractions[:-1]] + [len(selected)]
    groups = [selected[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if any(not g for g in groups):
        raise ValueError(f"A model with {n_layers} layers is too shallow for layer groups {fractions}.")
    return groups


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the text ``" ".join(words)`` built word by word, and each word's [start, end) span.

    Each word after the first is encoded with its leading space, so the space belongs to the word's
    first token, as in the reference context tokenization.
    """
    ids: list[int] = []
    spans: list[tuple[int, int]] = []
    for index, word in enumerate(words):
        piece = word if index == 0 else " " + word
        word_ids = tokenizer.encode(piece, add_special_tokens=False)
        if not word_ids:
            raise ValueError(f"The tokenizer produced no token for word {word!r}.")
        spans.append((len(ids), len(ids) + len(word_ids)))
        ids.extend(word_ids)
    return ids, spans


def concatenation_matches(tokenizer: Any, words: Sequence[str]) -> bool:
    """Whether tokenizing the joined text gives the word-by-word ids (then one pass equals the reference)."""
    ids, _ = word_token_ids(tokenizer, words)
    return tokenizer.encode(" ".join(words), add_special_tokens=False) == ids


def _group_means(hidden: Any, groups: list[list[int]]) -> Any:
    """(n_hidden_states, ..., d) -> (n_groups, ..., d) float32."""
    import torch

    return torch.stack([hidden[g].float().mean(0) for g in groups])


@dataclass
class OnePassTextFeatures:
    """Per-word (n_groups, d) features from one causal pass per text, batched across texts.

    ``model`` is a decoder (e.g. ``LlamaModel``) returning ``hidden_states``; ``tokenizer`` a Hugging
    Face tokenizer. Texts longer than ``max_tokens`` are refused rather than silently cut (TRIBE's
    context window is 1,024 words; brainrl texts are at most 300 words).
    """

    model: Any
    tokenizer: Any
    groups: list[list[int]] | None = None
    max_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = layer_groups(int(self.model.config.num_hidden_layers))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))

    def tokenize(self, texts_words: Sequence[Sequence[str]]):
        return [word_token_ids(self.tokenizer, words) for words in texts_words]

    def __call__(self, texts_words: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
        """One (n_words, n_groups, d) float32 array per text."""
        import torch

        encoded = self.tokenize(texts_words)
        device = next(self.model.parameters()).device
        out: list[np.ndarray] = []
        for begin in range(0, len(encoded), batch_size):
            chunk = encoded[begin : begin + batch_size]
            length = max(len(ids) for ids, _ in chunk)
            if length > self.max_tokens:
                raise ValueError(f"A text has {length} tokens, more than max_tokens={self.max_tokens}.")
            input_ids = torch.full((len(chunk), length), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, (ids, _) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
                ).hidden_states
                stacked = torch.stack(hidden)  # (n_hidden, batch, tokens, d)
                grouped = _group_means(stacked, self.groups)  # (n_groups, batch, tokens, d) float32
                for row, (_, spans) in enumerate(chunk):
                    # span means as one matmul per text with an averaging matrix (zeros outside a span
                    # add exactly nothing, unlike differences of cumulative sums)
                    weights = torch.zeros((len(spans), length), dtype=grouped.dtype)
                    for w, (start, end) in enumerate(spans):
                        weights[w, start:end] = 1.0 / (end - start)
                    weights = weights.to(grouped.device)
                    means = torch.einsum("wt,gtd->gwd", weights, grouped[:, row])
                    out.append(means.permute(1, 0, 2).cpu().numpy())
        return out


def reference_word_features(
    model: Any, tokenizer: Any, words: Sequence[str], groups: list[list[int]], batch_size: int = 4, max_context_words: int = 1024
) -> np.ndarray:
    """(n_words, n_groups, d): one forward per word on its left context, as TRIBE's extractor does."""
    import torch

    contexts = [" ".join(words[max(0, i + 1 - max_context_words) : i + 1]) for i in range(len(words))]
    pad_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out = []
    for begin in range(0, len(words), batch_size):
        batch_ctx = contexts[begin : begin + batch_size]
        batch_ids = [tokenizer.encode(c, add_special_tokens=False) for c in batch_ctx]
        length = max(len(ids) for ids in batch_ids)
        input_ids = torch.full((len(batch_ids), length), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch_ids):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            hidden = torch.stack(
                model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True).hidden_states
            )
        for row, (context, ids) in enumerate(zip(batch_ctx, batch_ids)):
            word = words[begin + row]
            prefix = context[: -len(word)].rstrip()
            n_prefix = len(tokenizer.encode(prefix, add_special_tokens=False)) if prefix else 0
            n_target = max(1, len(ids) - n_prefix)
            span = hidden[:, row, len(ids) - n_target : len(ids)]
            out.append(_group_means(span, groups).mean(1).cpu().numpy())
    return np.stack(out)


def build_byte_bpe_tokenizer(corpus: Sequence[str], vocab_size: int = 600):
    """A small byte-level BPE tokenizer trained on ``corpus`` (same pre-tokenization family as Llama 3's),
    for tests and benchmarks that cannot download a real tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|eos|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|eos|>", pad_token="<|eos|>")
