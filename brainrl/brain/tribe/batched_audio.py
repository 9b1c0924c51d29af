"""Batched w2v-bert features inside TRIBE's own audio extractor (neuralset's ``Wav2VecBert``).

TRIBE computes audio features one clip at a time: read, resample to 16 kHz (julius), normalise, run
transformers' ``SeamlessM4TFeatureExtractor`` (numpy, on the CPU), then w2v-bert on that one clip. Like the
one-pass text path (one_pass_extractor.py), this module swaps the undecorated ``_get_data`` that exca calls
for the clips missing from its cache, for the duration of a predict call:

1. each clip is read, resampled and normalised by the extractor's own ``_resample_wav`` and
   ``_preprocess_wav``;
2. the filter bank runs for all clips at once on the model's device (``SeamlessFbank``, per-clip CMVN, equal
   to the extractor to ~1e-6; tests/brain/tribe/test_audio_frontend.py);
3. w2v-bert runs on ``batch_size`` clips per forward, padded, with an attention mask that keeps each clip's
   own frames (the same count as the clip alone: the last stacked vector counts even when half of it is
   padding, as in the unbatched call);
4. TRIBE's original ``_get_data`` then runs with ``_process_wav`` answering from step 3 (and resampling
   answered from step 1), so the hidden-state layout, layer handling, 2 Hz interpolation, uids and cache
   are TRIBE's own code.

Anything this does not cover (another audio model, another feature extractor, other filter-bank settings)
goes through TRIBE's computation unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class BatchedAudioStats:
    forwards: int = 0  # w2v-bert forwards made by the batched path
    clips: int = 0  # clips served by it
    fallback_clips: int = 0  # clips sent to TRIBE's per-clip computation
    fallback_reason: str | None = None
    seconds: float = 0.0  # wall time in the batched path (read, resample, filter bank, w2v-bert)

    def as_dict(self) -> dict[str, Any]:
        return {"forwards": self.forwards, "clips": self.clips, "fallback_clips": self.fallback_clips,
                "fallback_reason": self.fallback_reason, "seconds": self.seconds}


def unsupported_reason(extractor: Any) -> str | None:
    """Why the batched path cannot stand in for this audio extractor (None: it can)."""
    from brainrl.brain.tribe.audio_frontend import FbankConfig

    if type(extractor).__name__ != "Wav2VecBert":
        return f"audio extractor {type(extractor).__name__} (batched path implements Wav2VecBert)"
    if getattr(extractor, "layer_type", "transformer") != "transformer":
        return f"layer_type={extractor.layer_type!r}"
    if getattr(extractor, "device", None) == "accelerate":
        return "device='accelerate'"
    fe = extractor.feature_extractor
    c = FbankConfig()
    if type(fe).__name__ != "SeamlessM4TFeatureExtractor":
        return f"feature extractor {type(fe).__name__}"
    settings = (getattr(fe, "sampling_rate", None), getattr(fe, "num_mel_bins", None), getattr(fe, "stride", None),
                getattr(fe, "padding_value", None))
    if settings != (c.sample_rate, c.num_mel_bins, c.stride, c.padding_value):
        return f"filter-bank settings {settings} differ from SeamlessM4TFeatureExtractor's defaults"
    return None


def batched_latents(extractor: Any, waves: Sequence[Any], batch_size: int, stats: BatchedAudioStats,
                    timepoints: Sequence[int | None] | None = None,
                    combine: Callable[[int], Any] | None = None) -> list[Any]:
    """What ``extractor._process_wav(wave)`` returns for each 16 kHz mono wave, computed in batches.

    ``timepoints[i]``: the number of frames TRIBE's ``_get_data`` resamples clip i's features to (nearest
    neighbour, ``F.interpolate``'s default); done here on the model's device, before the copy to the host, it
    moves 2 Hz frames instead of 50 Hz ones (a 35 s clip's 25 layers x 1024 x 1750 float32 values, 179 MB, took
    64 ms to copy on an H200 host, 87% of a batch's GPU time). Nearest-neighbour picks the same frames on
    either device and commutes with the layer mean, so the values are TRIBE's own.

    ``combine`` maps the number of hidden states to a (n_groups, n_layers) or (n_layers,) matrix applied on the
    device before the copy (the read form, ``one_pass_extractor.layer_combination``): then (n_groups, d, time)
    or (d, time) per clip."""
    import torch

    from brainrl.brain.tribe.audio_frontend import SeamlessFbank

    model = extractor.model
    device = next(model.parameters()).device
    fbank = SeamlessFbank(device)
    out: list[Any] = [None] * len(waves)
    order = sorted(range(len(waves)), key=lambda i: -int(waves[i].numel()))  # similar lengths together
    dtype = next(model.parameters()).dtype
    for begin in range(0, len(order), batch_size):
        rows = order[begin: begin + batch_size]
        feats = fbank([waves[i] for i in rows], sampling_rate=fbank.config.sample_rate)
        lengths = [int(waves[i].numel()) for i in rows]
        # vectors per clip as the clip alone gets them: ceil(frames / stride), the last one possibly half padding
        n_vectors = [math.ceil(n / fbank.config.stride) for n in fbank.frame_counts(lengths)]
        steps = feats["input_features"].shape[1]
        mask = (torch.arange(steps, device=device)[None, :] < torch.tensor(n_vectors, device=device)[:, None]).long()
        with torch.no_grad():
            # ``forward`` rather than ``__call__``: the engine's hooks on the model would cast all 25 hidden states at
            # 50 Hz to float32 (a 1.4 GB copy for 8 clips of 35 s); the frames kept are cast below instead (exact)
            with compact_relative_key_bias(key_lengths=n_vectors, device=device):
                outputs = model.forward(feats["input_features"].to(dtype), attention_mask=mask,
                                        output_hidden_states=True)
        stats.forwards += 1
        hidden = outputs.hidden_states  # per layer (batch, time, d)
        matrix = None
        if combine is not None:
            matrix = torch.as_tensor(np.asarray(combine(len(hidden)), dtype=np.float32), device=device)
        picked = []
        for row, index in enumerate(rows):
            # the layout _process_wav builds, (layers, d, time) float32, at the frames TRIBE's _get_data keeps
            # (nearest neighbour: F.interpolate's own picks, taken from an index ramp), picked before the copy
            frames = nearest_frames(n_vectors[row], timepoints[index] if timepoints is not None else None, device)
            latents = torch.stack([h[row, frames] for h in hidden]).float().transpose(-1, -2)
            if matrix is not None:  # the read form, grouped here: n_groups / n_layers of the copy
                latents = torch.einsum("gl,ldt->gdt" if matrix.ndim == 2 else "l,ldt->dt", matrix, latents)
            picked.append(latents)
        for index, latents in zip(rows, to_host(picked)):  # one copy for the batch
            if matrix is None and not getattr(extractor, "cache_all_layers", False) \
                    and getattr(extractor, "cache_n_layers", None) is None:
                latents = torch.Tensor(extractor._aggregate_layers(latents.numpy()))
            out[index] = latents
        stats.clips += len(rows)
    return out


def to_host(tensors: Sequence[Any]) -> list[Any]:
    """The tensors on the host (contiguous), moved in one device-to-host copy instead of one per tensor."""
    import torch

    if not tensors:
        return []
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    sizes = [t.numel() for t in tensors]
    return [piece.view(t.shape) for piece, t in zip(torch.split(flat, sizes), tensors)]


#: set on a bias whose key padding is already folded in (``relative_key_bias`` with a ``key_index``); read by
#: ``_position_bias_mask``
MASK_FOLDED = "_brainrl_key_mask_folded"


def relative_key_bias(module: Any, query: Any, key: Any, key_index: Callable[[int, int], Any] | None = None
                      ) -> tuple[Any, Any]:
    """transformers' ``_apply_relative_key_position_encoding`` for w2v-bert (its attention's additive bias
    ``q_l . E[clamp(r - l) + left] * scaling``) computed from the 73 distinct distances: one (B, H, Lq, 73) product
    and a gather, instead of an (L, L, head_dim) embedding tensor and an einsum over it (per layer, 18% and 11%
    of a batch's GPU time on an H200 for 35 s clips). The same dot products, so the same bias up to summation order.

    ``key_index(n_q, n_k)``: a (B, 1, Lq, Lk) gather index from ``key_masked_index``, whose padded keys point
    at an extra column holding the dtype's minimum, so the bias comes out with the padding mask already in it
    (what transformers' sdpa path would otherwise add with a ``where``, one more pass over (B, H, L, L))."""
    import torch

    left, right = module.left_max_position_embeddings, module.right_max_position_embeddings
    n_q, n_k = query.shape[2], key.shape[2]
    table = torch.matmul(query, module.distance_embedding.weight.to(query.dtype).T) * module.scaling  # (B, H, Lq, 73)
    if key_index is not None:
        table = torch.nn.functional.pad(table, (0, 1), value=torch.finfo(table.dtype).min)
        bias = torch.gather(table, -1, key_index(n_q, n_k).expand(*table.shape[:2], n_q, n_k))
        setattr(bias, MASK_FOLDED, True)
        return query, bias
    distance = torch.arange(n_k, device=query.device)[None, :] - torch.arange(n_q, device=query.device)[:, None]
    index = (distance.clamp(-left, right) + left).expand(*table.shape[:2], n_q, n_k)
    return query, torch.gather(table, -1, index)


def key_masked_index(key_lengths: Sequence[int], left: int, right: int, device: Any) -> Callable[[int, int], Any]:
    """``key_index`` for ``relative_key_bias``: per clip, distance columns for its ``key_lengths[b]`` frames and the
    mask column (``left + right + 1``) for its padding. Built once per (Lq, Lk) and shared by the layers."""
    import torch

    lengths = torch.as_tensor(list(key_lengths), device=device)
    built: dict[tuple[int, int], Any] = {}

    def index(n_q: int, n_k: int) -> Any:
        if (n_q, n_k) not in built:
            keys = torch.arange(n_k, device=device)
            distance = (keys[None, :] - torch.arange(n_q, device=device)[:, None]).clamp(-left, right) + left
            padded = keys[None, None, :] >= lengths[:, None, None]  # (B, 1, Lk)
            built[(n_q, n_k)] = torch.where(padded, left + right + 1, distance[None]).unsqueeze(1)  # (B, 1, Lq, Lk)
        return built[(n_q, n_k)]

    return index


def _position_bias_mask(original: Callable) -> Callable:
    """transformers' sdpa ``create_position_bias_mask``, returning a bias that already holds the key padding
    (``MASK_FOLDED``) as it is instead of combining it with the boolean mask again."""
    @functools.wraps(original)
    def create(position_bias: Any, attention_mask: Any, is_causal: bool, *args: Any, **kwargs: Any) -> Any:
        if getattr(position_bias, MASK_FOLDED, False) and not is_causal:
            return position_bias
        return original(position_bias, attention_mask, is_causal, *args, **kwargs)

    return create


@contextlib.contextmanager
def compact_relative_key_bias(key_lengths: Sequence[int] | None = None, device: Any = None) -> Iterator[None]:
    """While active, w2v-bert's relative-key attention bias comes from ``relative_key_bias``. A no-op where
    transformers has no such function (another version): its own computation then runs.

    ``key_lengths``: the unpadded frame count of each clip of the batch (the attention mask's ones): the padding
    is then folded into the bias's gather, and transformers' sdpa path uses that bias as the mask (where it has
    ``create_position_bias_mask``; elsewhere the mask is folded and added again, the same softmax)."""
    try:
        from transformers.models.wav2vec2_bert import modeling_wav2vec2_bert as w2v
    except ImportError:  # pragma: no cover - transformers without w2v-bert
        yield
        return
    name = "_apply_relative_key_position_encoding"
    original = getattr(w2v, name, None)
    if original is None:
        yield
        return
    patches = [(w2v, name, relative_key_bias)]
    if key_lengths is not None:
        try:
            from transformers.integrations import sdpa_attention
        except ImportError:  # pragma: no cover - transformers without the sdpa integration
            sdpa_attention = None
        if getattr(sdpa_attention, "create_position_bias_mask", None) is not None:
            indices: dict[tuple[int, int], Callable] = {}

            def folded(module: Any, query: Any, key: Any) -> tuple[Any, Any]:
                shape = (module.left_max_position_embeddings, module.right_max_position_embeddings)
                if shape not in indices:
                    indices[shape] = key_masked_index(key_lengths, *shape, device or query.device)
                return relative_key_bias(module, query, key, indices[shape])

            patches = [(w2v, name, folded), (sdpa_attention, "create_position_bias_mask",
                                             _position_bias_mask(sdpa_attention.create_position_bias_mask))]
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    for owner, attr, value in patches:
        setattr(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)


def nearest_frames(n_frames: int, target: int | None, device: Any) -> Any:
    """Indices of the frames ``F.interpolate(x, target)`` (mode nearest) keeps of ``n_frames``: the function itself
    applied to an index ramp (exact integers in float32), so the picks are its own. All frames when ``target`` is
    None or equal."""
    import torch
    import torch.nn.functional as F

    ramp = torch.arange(n_frames, dtype=torch.float32, device=device)
    if target is None or target == n_frames:
        return ramp.long()
    return F.interpolate(ramp[None, None], target)[0, 0].long()


def target_frames(extractor: Any, event: Any) -> int | None:
    """The frame count TRIBE's ``_get_data`` gives this event's features (None: it keeps the native rate)."""
    if extractor.frequency == "native":
        return None
    from neuralset import base as nsbase

    return nsbase.Frequency(float(extractor.frequency)).to_ind(event.duration)


@functools.lru_cache(maxsize=8)
def _resampler(old: int, new: int, device: str = "cpu") -> Any:
    import julius

    return julius.resample.ResampleFrac(old_sr=old, new_sr=new).to(device)


@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """cuDNN convolutions in true float32 (PyTorch lets them use TF32 by default, ~1e-3 relative error)."""
    import torch

    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def resample_like_extractor(extractor: Any, wav: Any, frequency: float) -> Any:
    """``extractor._resample_wav(wav, frequency, extractor._input_frequency)`` (neuralset's BaseAudio: julius
    ``ResampleFrac`` on the transposed wave, integer rates only), with the resampler built once per rate pair
    instead of per clip (its windowed-sinc kernels took 33 ms a clip, a third of the host's share of a batch),
    on the device ``wav`` is on (julius is a float32 convolution; TF32 is switched off for it).
    An extractor that defines its own resampling runs it."""
    from neuralset.extractors.audio import BaseAudio

    target = extractor._input_frequency
    if type(extractor)._resample_wav is not BaseAudio._resample_wav or not all(
            float(f).is_integer() for f in (frequency, target)):
        return extractor._resample_wav(wav, frequency, target)
    with _no_tf32():
        return _resampler(int(frequency), int(target), str(wav.device))(wav.T).T


def read_form_timed_arrays(original: Callable) -> Callable:
    """``original`` (an undecorated audio ``_get_data``) with every TimedArray's layers in the read form that
    ``HuggingFaceAudio._get_timed_arrays`` makes of them (``one_pass_extractor.read_form``)."""
    from brainrl.brain.tribe.one_pass_extractor import read_form

    def _get_data(self: Any, events: Sequence[Any]) -> Iterator[Any]:
        for timed in original(self, events):
            timed.data = read_form(self, timed.data)
            yield timed

    return _get_data


def make_batched_get_data(original: Callable, batch_size: int, stats: BatchedAudioStats,
                          read_forms: bool = False) -> Callable:
    """A drop-in for the undecorated ``BaseAudio._get_data`` (same name, so exca's cache folder is TRIBE's).
    ``read_forms`` (nothing cached in between, as on the direct predict path): the layers in their read form,
    grouped on the model's device."""
    from brainrl.brain.tribe.one_pass_extractor import layer_combination

    reference = read_form_timed_arrays(original) if read_forms else original

    @functools.wraps(original)
    def _get_data(self: Any, events: Sequence[Any], samples: Sequence[Any] | None = None) -> Iterator[Any]:
        """``samples``: per event, what ``event.read()`` would return (the direct path reads no file)."""
        events = list(events)
        if not events:
            return
        reason = unsupported_reason(self)
        if reason is not None or not all(type(e).__name__ == "Audio" for e in events):
            if samples is not None:
                raise ValueError(f"in-memory audio samples need the batched audio path, which cannot run here: {reason}")
            stats.fallback_clips += len(events)
            stats.fallback_reason = reason or "non-Audio events (video sound tracks)"
            yield from reference(self, events)
            return
        cls = type(self)
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        prepared = []
        for i, event in enumerate(events):  # step 1 with the extractor's own code, on the model's device
            wav = event.read() if samples is None else samples[i]
            wav = resample_like_extractor(self, wav.to(device), event.frequency)
            prepared.append(self._preprocess_wav(wav))
        timepoints = [target_frames(self, event) for event in events]
        combine = (lambda n: layer_combination(self, n)) if read_forms else None
        latents = iter(batched_latents(self, prepared, batch_size, stats, timepoints, combine))
        stats.seconds += time.perf_counter() - started
        resampled = iter(prepared)
        # the original reads each file again and hands the samples to _resample_wav, which answers from step 1
        # and ignores them: that second read of every file is skipped
        with _patched(cls, "_resample_wav", lambda self_, wav, old, new: next(resampled)), \
                _patched(cls, "_preprocess_wav", lambda self_, wav: wav), \
                _patched(cls, "_process_wav", lambda self_, wav: next(latents)), \
                _patched(type(events[0]), "read", lambda event: None):
            yield from original(self, events)

    return _get_data


@contextlib.contextmanager
def _patched(cls: type, name: str, value: Callable) -> Iterator[None]:
    had = name in cls.__dict__
    old = cls.__dict__.get(name)
    setattr(cls, name, value)
    try:
        yield
    finally:
        if had:
            setattr(cls, name, old)
        else:
            delattr(cls, name)


@contextlib.contextmanager
def batched_audio_features(extractor: Any, batch_size: int, stats: BatchedAudioStats) -> Iterator[None]:
    """While active, the audio extractor's class computes missing clips' features in batches. Process-wide
    for that class (TRIBE has one audio extractor); restored on exit."""
    from brainrl.brain.tribe.one_pass_extractor import replaced_method, text_infra_method

    reason = unsupported_reason(extractor)
    if reason is not None:  # e.g. another audio model: TRIBE's own computation, said once in the stats
        stats.fallback_reason = reason
        yield
        return
    try:
        imethod = text_infra_method(extractor)  # the same exca MapInfra structure as the text extractor
    except TypeError as error:
        raise TypeError(f"{error} (for audio: use audio_features='reference')") from error
    with replaced_method(imethod, lambda original: make_batched_get_data(original, batch_size, stats)):
        yield
