"""w2v-bert's audio front end as batched torch ops, so it can run on the GPU next to the model.

TRIBE feeds w2v-bert-2.0 through transformers' ``SeamlessM4TFeatureExtractor``: a Kaldi-style 80-bin
log-mel fbank (25 ms frames, 10 ms hop), mean/variance normalisation per mel bin over the whole clip,
and stacking of frame pairs into 160-d vectors at 50 fps (tribev2.md §2.3). That extractor runs in numpy,
one clip at a time, and costs about as much per completion as w2v-bert itself. ``SeamlessFbank`` computes
the same features for a padded batch in a few tensor ops, on any device, and keeps the normalisation per
clip (the padding never enters a clip's statistics), so batching does not change a clip's features.

The filter bank and window are taken from ``transformers.audio_utils`` (the extractor's own constants).
By default the spectral part runs in float64 like the extractor (which also stores the FFT as complex64,
mirrored here), so the features agree to float32 rounding; ``compute_dtype=torch.float32`` is faster
and further off (tests/brain/tribe/test_audio_frontend.py measures both).

``PolyphaseResampler`` is the companion for the step before: espeak speaks at 22,050 Hz and w2v-bert
wants 16 kHz. It computes what ``scipy.signal.resample_poly`` computes (its Kaiser-windowed FIR, zero
padding at the ends) as one batched matrix product per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class FbankConfig:
    """``SeamlessM4TFeatureExtractor``'s defaults (w2v-bert-2.0's preprocessor config)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    fft_length: int = 512
    preemphasis: float = 0.97
    mel_floor: float = 1.192092955078125e-07
    int16_scale: float = 32768.0  # Kaldi works on 16-bit sample values
    cmvn_eps: float = 1e-7
    stride: int = 2  # frames stacked per output vector
    padding_value: float = 0.0


class SeamlessFbank:
    """Batched ``SeamlessM4TFeatureExtractor(...)(clips, padding=True, return_tensors="pt")``.

    Returns ``{"input_features": (B, T, 160) float32, "attention_mask": (B, T) int32}`` on ``device``,
    padded to the longest clip (frame count rounded up to a multiple of ``stride``), the same layout
    and mask the extractor produces.
    """

    def __init__(self, device: str | torch.device = "cpu", compute_dtype: torch.dtype = torch.float64,
                 config: FbankConfig = FbankConfig()):
        from transformers.audio_utils import mel_filter_bank, window_function

        if compute_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}.")
        self.config = config
        self.device = torch.device(device)
        self.compute_dtype = compute_dtype
        mel = mel_filter_bank(num_frequency_bins=config.fft_length // 2 + 1, num_mel_filters=config.num_mel_bins,
                              min_frequency=20, max_frequency=config.sample_rate // 2,
                              sampling_rate=config.sample_rate, norm=None, mel_scale="kaldi",
                              triangularize_in_mel_space=True)
        self.mel_filters = torch.as_tensor(mel, dtype=compute_dtype, device=self.device)  # (257, 80)
        window = window_function(config.frame_length, "povey", periodic=False)
        self.window = torch.as_tensor(window, dtype=compute_dtype, device=self.device)
        self.min_samples = config.frame_length + config.hop_length  # >= 2 frames, so the variance exists

    def frame_counts(self, lengths: Sequence[int]) -> list[int]:
        c = self.config
        return [1 + (n - c.frame_length) // c.hop_length for n in lengths]

    def log_mel(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, N) waveforms in [-1, 1] -> (B, F, 80) float32 log-mel energies (no normalisation)."""
        c = self.config
        x = padded.to(self.device, self.compute_dtype) * c.int16_scale
        frames = x.unfold(1, c.frame_length, c.hop_length)  # (B, F, 400), a view
        frames = frames - frames.mean(-1, keepdim=True)  # remove the DC offset per frame
        first = frames[..., :1] * (1.0 - c.preemphasis)
        frames = torch.cat([first, frames[..., 1:] - c.preemphasis * frames[..., :-1]], dim=-1) * self.window
        spectrum = torch.fft.rfft(frames, n=c.fft_length)
        if self.compute_dtype == torch.float64:
            spectrum = spectrum.to(torch.complex64).to(torch.complex128)  # the extractor stores complex64
        power = spectrum.real.square() + spectrum.imag.square()
        return (power @ self.mel_filters).clamp_min(c.mel_floor).log().to(torch.float32)

    def __call__(self, waveforms: Sequence[np.ndarray | torch.Tensor],
                 sampling_rate: int = 16000) -> dict[str, torch.Tensor]:
        c = self.config
        if sampling_rate != c.sample_rate:
            raise ValueError(f"SeamlessFbank expects {c.sample_rate} Hz audio, got {sampling_rate} Hz: resample "
                             "first (PolyphaseResampler).")
        if len(waveforms) == 0:
            raise ValueError("SeamlessFbank got no waveforms.")
        clips = [torch.as_tensor(w).reshape(-1) for w in waveforms]
        lengths = [int(w.numel()) for w in clips]
        self._check_lengths(lengths)
        padded = torch.zeros(len(clips), max(lengths), dtype=self.compute_dtype, device=self.device)
        for row, clip in enumerate(clips):
            padded[row, : lengths[row]] = clip.to(self.device).to(self.compute_dtype)
        return self.from_padded(padded, lengths)

    def _check_lengths(self, lengths: Sequence[int]) -> None:
        if min(lengths) < self.min_samples:
            short = list(lengths).index(min(lengths))
            raise ValueError(f"Clip {short} has {lengths[short]} samples; the fbank needs at least {self.min_samples} "
                             f"({1000 * self.min_samples / self.config.sample_rate:.0f} ms, two frames) to "
                             "normalise it. Drop or pad such clips before the front end.")

    def from_padded(self, padded: torch.Tensor, lengths: Sequence[int]) -> dict[str, torch.Tensor]:
        """Like ``__call__`` for a (B, N) batch of 16 kHz clips, each padded after its length."""
        c = self.config
        if padded.ndim != 2 or padded.shape[0] != len(lengths) or max(lengths) > padded.shape[1]:
            raise ValueError(f"from_padded wants (B, N) with N >= every length; got {tuple(padded.shape)} and "
                             f"{len(lengths)} lengths up to {max(lengths)}.")
        self._check_lengths(lengths)
        features = self.log_mel(padded)  # (B, F_max, 80)
        counts = torch.tensor(self.frame_counts(lengths), device=self.device)
        valid = torch.arange(features.shape[1], device=self.device)[None, :] < counts[:, None]  # (B, F_max)
        # per-clip, per-bin statistics over the clip's own frames (float64 sums; ddof=1 like the extractor)
        x64 = features.double() * valid[..., None]
        n = counts.double()[:, None, None]
        mean = x64.sum(1, keepdim=True) / n
        var = ((x64 - mean).square() * valid[..., None]).sum(1, keepdim=True) / (n - 1)
        normed = (features - mean.float()) / torch.sqrt(var.float() + c.cmvn_eps)
        normed = normed.masked_fill(~valid[..., None], c.padding_value)
        n_frames = math.ceil(features.shape[1] / c.stride) * c.stride  # pad to a multiple of the stride
        if n_frames > features.shape[1]:
            extra = n_frames - features.shape[1]
            normed = torch.nn.functional.pad(normed, (0, 0, 0, extra), value=c.padding_value)
            valid = torch.nn.functional.pad(valid, (0, extra), value=False)
        batch = normed.shape[0]
        stacked = normed.reshape(batch, n_frames // c.stride, c.stride * c.num_mel_bins)
        mask = valid[:, c.stride - 1 :: c.stride].to(torch.int32)  # a stacked vector counts if its last frame does
        return {"input_features": stacked, "attention_mask": mask}


class PolyphaseResampler:
    """``scipy.signal.resample_poly(x, up, down)`` (Kaiser beta 5 FIR, constant padding) for a padded batch.

    Output sample m sits at position m * down / up of the input; the FIR taps that touch it depend only
    on m mod up, so the whole resampling is a (K, up) matrix applied to input windows taken every ``down`` samples.
    """

    def __init__(self, rate_in: int, rate_out: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64):
        from scipy.signal import firwin

        if int(rate_in) <= 0 or int(rate_out) <= 0:
            raise ValueError(f"Sample rates must be positive integers, got {rate_in} -> {rate_out}.")
        g = math.gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        self.device = torch.device(device)
        self.dtype = dtype
        if self.up == self.down == 1:
            return
        up, down = self.up, self.down
        half = 10 * max(up, down)
        taps = firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up  # scipy's default design
        # y[m] = sum_j taps[j] * u[m * down + half - j], u = x upsampled by zero insertion (u[i * up] = x[i]).
        # For phase r = m mod up, m = q * up + r: the input indices are q * down + (r * down + half - j) / up.
        offsets = [(r * down + half) for r in range(up)]
        lo = min((o - (2 * half)) // up for o in offsets)  # smallest input offset (may be negative)
        hi = max(o // up for o in offsets)
        kernel = np.zeros((up, hi - lo + 1))
        for r, o in enumerate(offsets):
            j = np.arange(o % up, 2 * half + 1, up)  # taps whose upsampled index lands on an input sample
            kernel[r, (o - j) // up - lo] = taps[j]
        self.left = -lo  # zeros before the input so that offset lo is index 0
        self.kernel_width = hi - lo + 1
        self.kernel = torch.as_tensor(kernel.T.copy(), dtype=dtype, device=self.device)  # (K, up)

    def output_length(self, n: int) -> int:
        return -(-n * self.up // self.down)

    def __call__(self, padded: torch.Tensor, lengths: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """(B, N) zero-padded input and per-clip lengths -> (B, M) zero-padded output and output lengths."""
        out_lengths = [self.output_length(int(n)) for n in lengths]
        if self.up == self.down == 1:  # same rate: scipy returns the input unfiltered
            return padded.to(self.device, self.dtype), out_lengths
        m = max(out_lengths)
        q = -(-m // self.up)  # output blocks of ``up`` samples
        need = (q - 1) * self.down + self.kernel_width  # input samples the last block reads
        x = padded.to(self.device, self.dtype)
        x = torch.nn.functional.pad(x, (self.left, max(0, need - self.left - x.shape[1])))[:, :need]
        windows = x.unfold(1, self.kernel_width, self.down)  # (B, q, K): block q reads x[q * down : + K]
        y = (windows @ self.kernel).reshape(x.shape[0], q * self.up)[:, :m]  # (B, q, up) -> samples
        keep = torch.arange(m, device=y.device)[None, :] < torch.tensor(out_lengths, device=y.device)[:, None]
        return y * keep, out_lengths
