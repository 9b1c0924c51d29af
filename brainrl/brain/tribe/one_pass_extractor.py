"""One-pass text features inside TRIBE's own text extractor (neuralset's ``HuggingFaceText``).

Why here: in neuralset 0.0.2 the Word features come from ``HuggingFaceText._get_data``, an exca
``MapInfra`` method. The class attribute is a ``property`` whose getter (a ``MapInfraMethod``) keeps
the undecorated function in ``.method``; for the events missing from its cache, exca calls
``infra._infra_method.method(extractor, events)`` (events shuffled, possibly from many timelines) and
stores one yielded array per event under the uid ``f"{text}_{context}"``. Swapping ``.method`` for the
duration of a predict call replaces only the computation: uids, the cache, the order of the results,
the layer sub-selection (the extractor's own ``_layer_subselection``) and the later group means
(``_aggregate_layers``, applied when features are read) all stay TRIBE's.

The computation: the events of each timeline, in time order, form runs of nested contexts (each
context a prefix of the run's longest one; a sliding window or an unrelated context starts a new run).
One causal pass over each run's text, batched across runs, gives every member word's token-span mean.
A run is used only if tokenizing its text in one go gives exactly the tokens of its pieces cut at every
word boundary (then each context and prefix tokenizes as in the reference); other events, and models
or settings this equivalence does not cover, go through TRIBE's original per-word computation.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from brainrl.brain.tribe.features import OnePassTextFeatures, piece_token_ids

log = logging.getLogger(__name__)

#: ``config.model_type`` of decoders with causal self-attention, for which a pass over a text gives
#: every prefix's hidden states (TRIBE uses llama; TRIBE v2 mini uses qwen3).
CAUSAL_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gpt2")
#: Longest run (tokens) done in one pass; longer runs fall back (memory, and the tokenizer's truncation).
MAX_RUN_TOKENS = 8192


@dataclass
class OnePassStats:
    """What the one-pass path did since the engine loaded (for logs and tests)."""

    forwards: int = 0  # model passes made by the one-pass path
    runs: int = 0  # texts (runs of nested contexts) passed
    words: int = 0  # events served by one pass
    fallback_words: int = 0  # events sent to TRIBE's per-word computation
    fallback_reasons: collections.Counter = field(default_factory=collections.Counter)
    seconds: float = 0.0  # wall time in the one-pass computation (tokenizing, forwards, span means)
    #: set by the first call: largest |one-pass - TRIBE's own computation| on one word, and its feature scale
    self_check: dict[str, Any] | None = None

    def fallback(self, n: int, reason: str) -> None:
        if n:
            self.fallback_words += n
            self.fallback_reasons[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "forwards": self.forwards,
            "runs": self.runs,
            "words": self.words,
            "fallback_words": self.fallback_words,
            "fallback_reasons": dict(self.fallback_reasons),
            "seconds": self.seconds,
            "self_check": self.self_check,
        }


@dataclass
class ContextRun:
    """Events whose contexts are all prefixes of ``text``: (event index, prefix end, context end) in chars."""

    text: str
    members: list[tuple[int, int, int]] = field(default_factory=list)


def plan_runs(events: Sequence[Any]) -> tuple[list[ContextRun], dict[int, str]]:
    """Group Word events (``text``, ``context``, ``start``, ``timeline``) into runs of nested contexts.

    Returns the runs and, for events that cannot join one, the reason. The word's target is what the
    reference takes: the context after ``context[:-len(text)].rstrip()``.
    """
    by_timeline: dict[Any, list[int]] = collections.defaultdict(list)
    rejected: dict[int, str] = {}
    for index, event in enumerate(events):
        text, context = getattr(event, "text", None), getattr(event, "context", None)
        if not isinstance(text, str) or not text or not isinstance(context, str) or not context:
            rejected[index] = "empty word or context"
        elif not context.endswith(text):
            rejected[index] = "context does not end with the word"
        else:
            by_timeline[getattr(event, "timeline", None)].append(index)
    runs: list[ContextRun] = []
    for indices in by_timeline.values():
        indices.sort(key=lambda i: (float(events[i].start), len(events[i].context)))
        current: ContextRun | None = None
        for index in indices:
            context, word = events[index].context, events[index].text
            prefix_end = len(context[: len(context) - len(word)].rstrip())
            if current is not None and context.startswith(current.text):
                current.text = context
            elif current is None or not current.text.startswith(context):
                current = ContextRun(context)
                runs.append(current)
            current.members.append((index, prefix_end, len(context)))
    return runs, rejected


def encode_run(tokenizer: Any, run: ContextRun) -> tuple[list[int], list[tuple[int, int]]] | None:
    """Token ids of the run's text cut at every prefix and context end, and each member's token span;
    None if the joint tokenization differs (a token straddles a cut) or a span is empty."""
    cuts = sorted({0, len(run.text)} | {p for _, p, _ in run.members} | {c for _, _, c in run.members})
    ids, offsets = piece_token_ids(tokenizer, [run.text[a:b] for a, b in zip(cuts[:-1], cuts[1:])])
    if tokenizer.encode(run.text, add_special_tokens=False) != ids:
        return None
    at = dict(zip(cuts, offsets))
    spans = [(at[p], at[c]) for _, p, c in run.members]
    if any(end <= start for start, end in spans):
        return None
    return ids, spans


def unsupported_reason(extractor: Any) -> str | None:
    """Why the one-pass path cannot stand in for this extractor's computation (None: it can)."""
    if not getattr(extractor, "contextualized", False):
        return "contextualized=False"
    if getattr(extractor, "token_aggregation", None) != "mean":
        return f"token_aggregation={getattr(extractor, 'token_aggregation', None)!r} (one-pass implements 'mean')"
    if getattr(extractor, "device", None) == "accelerate":
        return "device='accelerate'"
    model_type = getattr(getattr(extractor.model, "config", None), "model_type", None)
    if model_type not in CAUSAL_MODEL_TYPES:
        return f"model_type={model_type!r} is not a known causal decoder {CAUSAL_MODEL_TYPES}"
    return None


def one_pass_features(
    extractor: Any, events: Sequence[Any], batch_size: int, stats: OnePassStats, read_forms: bool = False
) -> list[np.ndarray | None]:
    """Per event, what TRIBE's ``_get_data`` yields for it, (n_cached_layers, d) float32; None where
    the original computation must run instead. ``read_forms``: instead, what the extractor hands on when it
    reads the feature (``read_form``), its layer groups averaged on the model's device."""
    results: list[np.ndarray | None] = [None] * len(events)
    runs, rejected = plan_runs(events)
    for reason, count in collections.Counter(rejected.values()).items():
        stats.fallback(count, reason)
    tokenizer = extractor.tokenizer
    limit = min(MAX_RUN_TOKENS, int(getattr(tokenizer, "model_max_length", MAX_RUN_TOKENS) or MAX_RUN_TOKENS))
    usable: list[tuple[ContextRun, tuple[list[int], list[tuple[int, int]]]]] = []
    for run in runs:
        encoded = encode_run(tokenizer, run)
        if encoded is None:
            stats.fallback(len(run.members), "tokenizing the whole text differs from the word pieces")
        elif len(encoded[0]) > limit:
            stats.fallback(len(run.members), f"text longer than {limit} tokens")
        else:
            usable.append((run, encoded))
    if not usable:
        return results
    engine = OnePassTextFeatures(extractor.model, tokenizer, groups=[[0]], max_tokens=limit)

    def select(n_hidden: int) -> list[int]:  # the extractor's own sub-selection (cache_n_layers)
        return [int(i) for i in np.asarray(extractor._layer_subselection(np.arange(n_hidden)))]

    combine = (lambda n: layer_combination(extractor, n)) if read_forms else None
    means = engine.span_means([encoded for _, encoded in usable], batch_size=batch_size, layers=select, combine=combine)
    stats.forwards += engine.forward_calls
    stats.runs += len(usable)
    for (run, _), per_word in zip(usable, means):
        for (index, _, _), array in zip(run.members, per_word):
            if np.isnan(array).any():
                raise ValueError(f"NaN in one-pass features for word {events[index].text!r}")
            results[index] = np.ascontiguousarray(array if read_forms else cached_form(extractor, array), dtype=np.float32)
        stats.words += len(run.members)
    return results


def groups_before_caching(extractor: Any) -> bool:
    """Whether neuralset averages the layer groups before caching (``cache_n_layers`` unset and not
    ``cache_all_layers``, as in TRIBE v2 mini and tribev2's default config) rather than after reading."""
    return not getattr(extractor, "cache_all_layers", False) and getattr(extractor, "cache_n_layers", None) is None


def cached_form(extractor: Any, per_layer: np.ndarray) -> np.ndarray:
    """A word's (n_selected_layers, d) span means in the form TRIBE's ``_get_data`` yields (and caches)
    them: as they are, or already grouped by the extractor's own ``_aggregate_layers``."""
    return extractor._aggregate_layers(per_layer) if groups_before_caching(extractor) else per_layer


def read_form(extractor: Any, yielded: np.ndarray) -> np.ndarray:
    """What ``HuggingFaceText._get_timed_arrays`` makes of a cached feature: its layer groups averaged
    (``_aggregate_layers``) when layers were cached ungrouped (``cache_n_layers``), else the feature itself."""
    if getattr(extractor, "cache_all_layers", False) or getattr(extractor, "cache_n_layers", None) is not None:
        return np.asarray(extractor._aggregate_layers(yielded))
    return yielded


def read_form_get_data(original: Callable) -> Callable:
    """``original`` (an undecorated ``_get_data``) with every yielded feature in its read form."""

    def _get_data(self: Any, events: Sequence[Any]) -> Iterator[np.ndarray]:
        return (read_form(self, np.asarray(value)) for value in original(self, events))

    return _get_data


def layer_combination(extractor: Any, n_layers: int) -> np.ndarray:
    """The linear map from a word's ``n_layers`` selected span means to its read form (``read_form`` of
    ``cached_form``): every layer aggregation neuralset offers (pick, mean, sum, group means) is linear in
    the layer axis, so the extractor's own ``_aggregate_layers`` applied to the identity gives its matrix,
    (n_groups, n_layers), or (n_layers,) where it returns one vector."""
    return read_form(extractor, cached_form(extractor, np.eye(n_layers, dtype=np.float64)))


#: Largest |one-pass - per-word| allowed in the self-check, relative to the word's largest feature. Real
#: disagreement (wrong layers, wrong span) is of order 1; float32 agrees to ~1e-6, bf16 weights to ~1e-2.
SELF_CHECK_RELATIVE_TOLERANCE = 0.05


def check_against_original(extractor: Any, original: Callable, events: Sequence[Any],
                           results: Sequence[np.ndarray | None], stats: OnePassStats) -> None:
    """Once per engine: TRIBE's own computation on one word served by one pass must give the same shape
    and (within ``SELF_CHECK_RELATIVE_TOLERANCE``) the same values. Raises otherwise, before the caller
    yields, so exca caches nothing wrong."""
    index = next((i for i, value in enumerate(results) if value is not None), None)
    if index is None:
        return
    reference = np.asarray(next(iter(original(extractor, [events[index]]))), dtype=np.float32)
    ours = results[index]
    if reference.shape != ours.shape:
        raise ValueError(
            f"one-pass text features have shape {ours.shape} where TRIBE's extractor yields {reference.shape} "
            f"(cache_n_layers={getattr(extractor, 'cache_n_layers', None)!r}, layers={getattr(extractor, 'layers', None)!r}); "
            "nothing was cached. Use text_features='reference' and report this."
        )
    diff = float(np.abs(reference - ours).max())
    scale = float(np.abs(reference).max()) or 1.0
    stats.self_check = {"word": str(events[index].text), "shape": list(ours.shape), "max_abs_diff": diff,
                        "max_abs_feature": scale}
    if diff > SELF_CHECK_RELATIVE_TOLERANCE * scale:
        raise ValueError(
            f"one-pass text features differ from TRIBE's own by {diff:.3g} (features up to {scale:.3g}) for word "
            f"{events[index].text!r}; nothing was cached. Use text_features='reference'."
        )


def make_one_pass_get_data(original: Callable, batch_size: int, stats: OnePassStats,
                           read_forms: bool = False) -> Callable:
    """A drop-in for the undecorated ``HuggingFaceText._get_data``: same arguments, one array per event,
    in the order received. ``functools.wraps`` keeps ``__name__ == "_get_data"``, from which exca
    derives the cache folder, so the features land where TRIBE looks for them. ``read_forms`` (no cache in
    between, as on the direct predict path): every array in its read form (``read_form``), the one-pass
    ones grouped on the model's device."""
    reference = read_form_get_data(original) if read_forms else original

    @functools.wraps(original)
    def _get_data(self: Any, events: Sequence[Any]) -> Iterator[np.ndarray]:
        events = list(events)
        reason = unsupported_reason(self)
        if reason is not None:
            stats.fallback(len(events), reason)
            yield from reference(self, events)
            return
        started = time.perf_counter()
        results = one_pass_features(self, events, batch_size, stats, read_forms=read_forms)
        stats.seconds += time.perf_counter() - started
        if stats.self_check is None:
            check_against_original(self, reference, events, results, stats)  # raises before anything is cached
        missing = [i for i, value in enumerate(results) if value is None]
        if missing:
            log.info("%d of %d words use TRIBE's per-word text features: %s", len(missing), len(events),
                     dict(stats.fallback_reasons))
            for index, value in zip(missing, reference(self, [events[i] for i in missing])):
                results[index] = value
        yield from results

    return _get_data


def text_infra_method(extractor: Any) -> Any:
    """The exca ``MapInfraMethod`` behind ``type(extractor)._get_data``, checked to be the one the
    extractor's infra calls; a clear error if neuralset or exca changed that structure."""
    attribute = None
    for cls in type(extractor).__mro__:
        if "_get_data" in cls.__dict__:
            attribute = cls.__dict__["_get_data"]
            break
    imethod = getattr(attribute, "fget", None) if isinstance(attribute, property) else None
    infra_method = getattr(getattr(extractor, "infra", None), "_infra_method", None)
    if imethod is None or not callable(getattr(imethod, "method", None)) or infra_method is not imethod:
        raise TypeError(
            f"text_features='one-pass' needs {type(extractor).__name__}._get_data to be an exca MapInfra method "
            "(as in neuralset 0.0.2 with exca < 0.5.26); this installation differs. Use text_features='reference'."
        )
    return imethod


@contextlib.contextmanager
def one_pass_text_features(extractor: Any, batch_size: int, stats: OnePassStats) -> Iterator[None]:
    """While active, the text extractor's class computes missing Word features in one pass per text.
    Process-wide for that class (TRIBE has one text extractor); restored on exit."""
    with replaced_method(text_infra_method(extractor), lambda original: make_one_pass_get_data(original, batch_size, stats)):
        yield


@contextlib.contextmanager
def replaced_method(imethod: Any, make: Callable[[Callable], Callable]) -> Iterator[None]:
    """Swap an exca ``MapInfraMethod``'s undecorated ``.method`` for ``make(original)``; restored on exit."""
    original = imethod.method
    imethod.method = make(original)
    try:
        yield
    finally:
        imethod.method = original
