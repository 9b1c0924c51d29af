"""Double of ``neuralset.extractors.text.HuggingFaceText`` (neuralset 0.0.2), written from its documented
behaviour (shared/docs/tribev2.md section 2.2), no code copied.

Same names and call structure as the real class, which brainrl's one-pass patch depends on:
``_get_data(events)`` is an exca ``MapInfra`` method (``@infra.apply``, uid ``f"{text}_{context}"``)
yielding per Word event the token-span mean of the sub-selected hidden states, (n_cached_layers, d)
float32; ``_get_timed_arrays`` reads them back and applies ``_aggregate_layers`` (TRIBE: group means).
The per-word computation is the reference one: ``batch_size`` events per forward, each context
tokenized without special tokens, right-padded, pads counted as ``== _pad_id`` (the EOS id), the word's
tokens = the last ``n_tokens - n_pads - n_prefix`` where ``n_prefix`` counts the tokens of
``context[:-len(text)].rstrip()``. The model is loaded with ``transformers.AutoModel`` from
``model_name`` (a local folder here) and the tokenizer with ``truncation_side="left"``.
``MODEL_LOADS`` counts loads per model name, so tests can see residency.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from exca import MapInfra
from neuralset.events import Word, extract_words

MODEL_LOADS: collections.Counter = collections.Counter()


@dataclass
class TimedArray:
    frequency: float
    start: float
    duration: float
    data: np.ndarray


class HuggingFaceText:
    infra = MapInfra(version="v6")

    def __init__(
        self,
        *,
        model_name: str = "openai-community/gpt2",
        device: str = "auto",
        batch_size: int = 32,
        contextualized: bool = True,
        layers: float | list[float] | str = 2 / 3,
        cache_n_layers: int | None = None,
        layer_aggregation: str | None = "mean",
        token_aggregation: str | None = "mean",
        event_types: str = "Word",
        infra: dict | None = None,
    ):
        self.model_name = model_name
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.batch_size = batch_size
        self.contextualized = contextualized
        self.layers = layers
        self.cache_n_layers = cache_n_layers
        self.layer_aggregation = layer_aggregation
        self.token_aggregation = token_aggregation
        self.event_types = event_types
        self.infra = type(self).infra.bind(self, **(infra or {}))

    # -- model ---------------------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if not hasattr(self, "_model"):
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name, truncation_side="left")
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._pad_id = self._tokenizer.eos_token_id
            self._model = self._load_model()
            MODEL_LOADS[self.model_name] += 1
        return self._model

    def _load_model(self) -> torch.nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(self.model_name).to(self.device).eval()

    @property
    def tokenizer(self) -> Any:
        self.model  # noqa: B018 - loads both
        return self._tokenizer

    # -- aggregation (HuggingFaceMixin) -----------------------------------------------------------------
    def _layer_subselection(self, latents):
        n = latents.shape[0]
        if self.cache_n_layers is None or self.cache_n_layers >= n:
            return latents
        keep = [int(round(x)) for x in np.linspace(0, n - 1, self.cache_n_layers)]
        return latents[keep]

    def _aggregate_tokens(self, latents):
        latents = self._layer_subselection(latents)
        if self.token_aggregation != "mean":
            raise NotImplementedError("the double implements token_aggregation='mean' only")
        out = latents.mean(1)
        return out.float() if isinstance(out, torch.Tensor) else out

    def _aggregate_layers(self, latents: np.ndarray) -> np.ndarray:
        latents = np.asarray(latents)
        n = latents.shape[0]
        fractions = self.layers if isinstance(self.layers, list) else [self.layers]
        idx = sorted({int(f * (n - 1)) for f in fractions})
        if len(idx) == 1:
            return latents[idx[0]]
        if self.layer_aggregation != "group_mean":
            raise NotImplementedError("the double implements layer_aggregation='group_mean' only")
        bounds = idx[:-1] + [idx[-1] + 1]
        return np.stack([latents[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])

    # -- features --------------------------------------------------------------------------------------
    @infra.apply(item_uid=lambda event: f"{event.text}_{getattr(event, 'context', '')}")
    def _get_data(self, events: list[Word]) -> Iterator[np.ndarray]:
        tokenizer, model = self.tokenizer, self.model
        with torch.no_grad():
            for begin in range(0, len(events), self.batch_size):
                chunk = events[begin : begin + self.batch_size]
                inputs = [e.context if self.contextualized else e.text for e in chunk]
                if not all(inputs):
                    raise ValueError(f"Empty text or context for target_words {[e.text for e in chunk]!r}")
                batch = tokenizer(inputs, add_special_tokens=False, return_tensors="pt", padding=True, truncation=True)
                states = model(**batch.to(self.device), output_hidden_states=True).hidden_states
                hidden = torch.stack([s.cpu() for s in states])  # (n_hidden, batch, tokens, d)
                n_tokens = hidden.shape[2]
                for row, event in enumerate(chunk):
                    n_pads = int((batch["input_ids"][row].cpu() == self._pad_id).sum())
                    kept = hidden[:, row, : n_tokens - n_pads]
                    if self.contextualized:
                        context = event.context
                        prefix = context[: len(context) - len(event.text)].rstrip()
                        n_prefix = len(tokenizer.encode(prefix, add_special_tokens=False)) if prefix else 0
                        kept = kept[:, -max(1, n_tokens - n_pads - n_prefix) :]
                    out = self._aggregate_tokens(kept).cpu().numpy()
                    if self.cache_n_layers is None:  # as neuralset 0.0.2: grouped before caching when unset
                        out = self._aggregate_layers(out)
                    if np.isnan(out).any():
                        raise ValueError(f"NaN in output for target_word {event.text}")
                    yield out

    def _get_timed_arrays(self, events: list[Word], start: float, duration: float) -> Iterator[TimedArray]:
        if self.contextualized and any(not e.context for e in events):
            raise ValueError("Contextualized embeddings require a context.")
        for event, latent in zip(events, self._get_data(events)):
            grouped = self._aggregate_layers(latent) if self.cache_n_layers is not None else latent  # on read when set
            yield TimedArray(0.0, event.start, event.duration, grouped)

    def prepare(self, obj) -> None:
        self._get_data(extract_words(obj))
