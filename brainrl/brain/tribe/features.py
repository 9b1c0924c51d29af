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
from typing import Any, Callable, Sequence

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


def piece_token_ids(tokenizer: Any, pieces: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of ``"".join(pieces)`` tokenized piece by piece, and the token offset of every piece
    boundary (``len(pieces) + 1`` offsets). Equals the joint tokenization when no token straddles a cut.
    A fast (Rust) Hugging Face tokenizer encodes all pieces in one batch call (the same ids as one
    ``encode`` per piece, without a Python round trip per piece); others one piece at a time."""
    if getattr(tokenizer, "is_fast", False) and pieces:
        encoded = tokenizer(list(pieces), add_special_tokens=False)["input_ids"]
    else:
        encoded = [tokenizer.encode(piece, add_special_tokens=False) for piece in pieces]
    ids: list[int] = []
    offsets = [0]
    for piece_ids in encoded:
        ids.extend(piece_ids)
        offsets.append(len(ids))
    return ids, offsets


def word_token_ids(tokenizer: Any, words: Sequence[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the text ``" ".join(words)`` built word by word, and each word's [start, end) span.

    Each word after the first is encoded with its leading space, so the space belongs to the word's
    first token, as in the reference context tokenization.
    """
    ids, offsets = piece_token_ids(tokenizer, [word if i == 0 else " " + word for i, word in enumerate(words)])
    spans = list(zip(offsets[:-1], offsets[1:]))
    for word, (start, end) in zip(words, spans):
        if start == end:
            raise ValueError(f"The tokenizer produced no token for word {word!r}.")
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
    context window is 1,024 words; brainrl texts are at most 300 words). ``forward_calls`` counts the
    model passes made so far.
    """

    model: Any
    tokenizer: Any
    groups: list[list[int]] | None = None
    max_tokens: int = 4096
    forward_calls: int = 0

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = layer_groups(int(self.model.config.num_hidden_layers))
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (self.tokenizer.eos_token_id or 0))

    def tokenize(self, texts_words: Sequence[Sequence[str]]):
        return [word_token_ids(self.tokenizer, words) for words in texts_words]

    def __call__(self, texts_words: Sequence[Sequence[str]], batch_size: int = 32) -> list[np.ndarray]:
        """One (n_words, n_groups, d) float32 array per text: group means of the span means."""
        used = sorted({layer for group in self.groups for layer in group})
        column = {layer: i for i, layer in enumerate(used)}
        per_layer = self.span_means(self.tokenize(texts_words), batch_size=batch_size, layers=used)
        return [
            np.stack([means[:, [column[layer] for layer in group]].mean(1) for group in self.groups], axis=1)
            for means in per_layer
        ]

    def span_means(
        self,
        encoded: Sequence[tuple[Sequence[int], Sequence[tuple[int, int]]]],
        batch_size: int = 32,
        layers: Sequence[int] | Callable[[int], Sequence[int]] | None = None,
        combine: Callable[[int], np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """For each ``(ids, spans)``: (n_spans, n_layers, d) float32, the mean of the chosen hidden states
        over each token span. ``layers`` lists hidden-state indices (0 = embeddings), or maps the number
        of hidden states to them; None keeps all. ``combine`` maps the number of chosen layers to a linear
        combination of them, a (n_groups, n_layers) or (n_layers,) matrix, applied on the model's device
        before the copy to the host: then (n_spans, n_groups, d) or (n_spans, d). Texts are sorted by length
        before batching (less padding) and returned in the given order."""
        import torch

        for ids, spans in encoded:
            if len(ids) > self.max_tokens:
                raise ValueError(f"A text has {len(ids)} tokens, more than max_tokens={self.max_tokens}.")
            if any(not 0 <= start < end <= len(ids) for start, end in spans):
                raise ValueError(f"Every span must be a non-empty [start, end) inside the text's {len(ids)} tokens.")
        device = next(self.model.parameters()).device
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        out: list[np.ndarray | None] = [None] * len(encoded)
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            length = max(len(encoded[i][0]) for i in rows)
            input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), length), dtype=torch.long)
            for row, index in enumerate(rows):
                ids = encoded[index][0]
                input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                hidden = self.model(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
                ).hidden_states
                self.forward_calls += 1
                chosen = list(range(len(hidden))) if layers is None else layers
                if callable(chosen):
                    chosen = chosen(len(hidden))
                # span means as one batched matmul per layer with an averaging matrix (zeros outside a span add
                # exactly nothing, unlike differences of cumulative sums), in float32, each layer read once
                n_spans = max(len(encoded[i][1]) for i in rows)
                weights = torch.zeros((len(rows), n_spans, length), dtype=torch.float32)
                for row, index in enumerate(rows):
                    for w, (start, end) in enumerate(encoded[index][1]):
                        weights[row, w, start:end] = 1.0 / (end - start)
                weights = weights.to(device)
                per_layer = (torch.bmm(weights, hidden[int(i)].float()) for i in chosen)  # (B, W, d) each
                if combine is None:
                    means = torch.stack(list(per_layer), dim=2)  # (B, W, L, d)
                else:  # the layer combination accumulated layer by layer: no (B, W, L, d) tensor
                    matrix = torch.as_tensor(np.asarray(combine(len(chosen)), dtype=np.float32), device=device)
                    means = None
                    for column, layer_means in enumerate(per_layer):
                        term = (matrix[:, column, None] * layer_means[:, :, None] if matrix.ndim == 2
                                else matrix[column] * layer_means)  # (B, W, G, d) or (B, W, d)
                        means = term if means is None else means + term
                means = means.float().cpu().numpy()  # one copy per batch
                for row, index in enumerate(rows):
                    out[index] = means[row, : len(encoded[index][1])]
        return out  # type: ignore[return-value]


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
