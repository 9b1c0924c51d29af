#!/usr/bin/env python
"""End-to-end speed of a TRIBE v2-shaped pipeline with random weights: fast path vs. the reference.

Stand-ins are built from local configs (no hub access): Llama-3.2-3B (LlamaConfig), w2v-bert-2.0
(Wav2Vec2BertConfig defaults) and a fusion encoder of TRIBE's size (docs/tribe.md, tribev2.md 3.2) in
plain torch. Weights are random, so only timings mean anything.

Fast path, per batch of B completions: espeak speech with word timings (a pool of --speech-workers
processes; checked to give the same stimuli as one process) -> one-pass Llama word features batched
over texts -> audio front end (22.05 -> 16 kHz resampling, SeamlessM4T fbank with per-clip CMVN): with
--fbank gpu (default) batched torch ops on --device (brainrl/brain/tribe/audio_frontend.py), with
--fbank cpu scipy + transformers' extractor one clip at a time -> w2v-bert on the clips (batched,
masked) -> features on the 2 Hz grid -> fusion encoder over B 100 s windows -> (T, 20484) per completion.
The two front ends are also timed and compared on the same clips (max |diff| of the fbank features and
of the w2v-bert features they lead to).

Reference reconstruction, one completion at a time: feature models rebuilt on every call (random init
on the device, which is faster than TRIBE's from_pretrained disk load), one Llama pass per word on its
left context in batches of 4, w2v-bert on the clip, fusion on one window. gTTS and WhisperX are not run
(no network); they are listed as "not run".

Text features on their own (resident Llama, same texts): TRIBE's per-word passes (batches of 4) vs
one causal pass per text, at batch 1 and batched, with the agreement between them (median and smallest
per-word r, largest difference and the feature scale; in bf16 they can differ visibly, so bf16 needs this
parity check before use), the FLOPs each needs (2 x non-embedding parameters x tokens, attention ignored)
and the throughput reached.

    python scripts/bench_tribe.py --device cuda --out bench_tribe.json
    python scripts/bench_tribe.py --device cuda --dtype bfloat16 --out bench_tribe_bf16.json
    python scripts/bench_tribe.py --device cpu --tiny          # smoke test

``--backend`` times the shipped backend instead (``TribeEngine``, what ``model: tribe`` runs): TRIBE v2's own
code (tribev2 checkout in $BRAINRL_TRIBEV2_SRC, neuralset, exca) on a random-weight stand-in that tribev2's
own config and FmriEncoder build (brainrl/brain/tribe/standin.py; ``--tiny`` for small shapes, else the
real ones). Per batch it reports ms per completion for speech (espeak pool), the one-pass text features,
the batched audio features (inside TRIBE's extractor), the rest of TRIBE's predict (data loading, fusion,
splitting), the total, and peak GPU memory; ``--compare-reference`` also times TRIBE's own per-word text
and per-clip audio paths side by side and reports their agreement, and with ``--dtype bfloat16`` the
fp32 run is made too and the parity of bf16 against it is reported. ``--predict-path tribe,direct`` times each
setting through both of the backend's predict paths (``TribeConfig.predict_path``: TRIBE's own
``TribeModel.predict``, or the same input tensors built without its events DataFrame) on the same texts and
reports the parity between them (labels ``<setting>-direct``):

    BRAINRL_TRIBEV2_SRC=... python scripts/bench_tribe.py --backend --device cuda --dtype bfloat16 --out bench_backend.json
    BRAINRL_TRIBEV2_SRC=... python scripts/bench_tribe.py --backend --device cuda --dtype bfloat16 --predict-path tribe,direct
    BRAINRL_TRIBEV2_SRC=... python scripts/bench_tribe.py --backend --device cpu --tiny --batches 4 --reps 1

Needs torch, transformers, numpy, scipy, soundfile, espeakng-loader and brainrl (no torchaudio/librosa).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brainrl.brain.tribe.audio_frontend import PolyphaseResampler, SeamlessFbank  # noqa: E402
from brainrl.brain.tribe.features import (  # noqa: E402
    OnePassTextFeatures,
    build_byte_bpe_tokenizer,
    layer_groups,
    reference_word_features,
)

GRID_HZ = 2.0
WINDOW_S = 100
N_VERTICES = 20484
VOCAB = (
    "the a of and to in that it was he she they we you for on with as at by from this but not or his her their "
    "river light house morning storm city window people voice memory road garden letter winter summer music "
    "quietly slowly suddenly always never again almost every second little great old new young small early "
    "said walked remembered opened watched carried listened wondered believed turned found thought heard "
    "teacher doctor brother sister father mother friend stranger child neighbour captain soldier painter"
).split()


# -- stand-in models -----------------------------------------------------------------------------------
def llama_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return LlamaConfig(vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                       num_attention_heads=24, num_key_value_heads=8, max_position_embeddings=131072,
                       rope_theta=500000.0, tie_word_embeddings=True)


def w2v_config(tiny: bool):
    from transformers import Wav2Vec2BertConfig

    if tiny:
        return Wav2Vec2BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                                  output_hidden_size=64)
    return Wav2Vec2BertConfig()  # defaults are w2v-bert-2.0's shape: 24 conformer layers, d=1024


class FusionEncoder(nn.Module):
    """TRIBE's FmriEncoderModel shape (tribev2.md 3.2): per-modality linear projectors to 384 each, learned
    time embedding, 8-layer pre-norm Transformer (d=1152, 8 heads, GELU FF x4), low-rank head 1152->2048,
    a 2048->20484 predictor, then average pooling 200 -> 100 steps. LayerNorm and no rotary here (ScaleNorm
    and rotary in x_transformers): same matmul cost, not the same numbers."""

    def __init__(self, text_dim: int, audio_dim: int, video_dim: int, dim: int, depth: int, heads: int, low_rank: int):
        super().__init__()
        part = dim // 3
        self.text = nn.Linear(text_dim, part)
        self.audio = nn.Linear(audio_dim, part)
        self.video = nn.Linear(video_dim, part)
        self.video_dim = video_dim
        self.time_pos_embed = nn.Parameter(torch.randn(1, 1024, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.low_rank_head = nn.Linear(dim, low_rank, bias=False)
        self.predictor = nn.Linear(low_rank, N_VERTICES)
        self.pool = nn.AdaptiveAvgPool1d(WINDOW_S)

    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """text (B, T, text_dim), audio (B, T, audio_dim) -> (B, 20484, 100)."""
        video = torch.zeros(text.shape[0], text.shape[1], self.video_dim, device=text.device, dtype=text.dtype)
        x = torch.cat([self.text(text), self.audio(audio), self.video(video)], dim=-1)
        x = x + self.time_pos_embed[:, : x.shape[1]]
        y = self.predictor(self.low_rank_head(self.encoder(x)))  # (B, T, 20484)
        return self.pool(y.transpose(1, 2))


def build_fusion(tiny: bool, text_d: int, audio_d: int) -> FusionEncoder:
    if tiny:
        return FusionEncoder(2 * text_d, 2 * audio_d, 2 * 32, dim=96, depth=2, heads=4, low_rank=128)
    return FusionEncoder(2 * 3072, 2 * 1024, 2 * 1408, dim=1152, depth=8, heads=8, low_rank=2048)


# -- inputs ------------------------------------------------------------------------------------------
def make_texts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        tokens = [rng.choice(VOCAB) for _ in range(words)]
        for i in range(7, words, rng.randint(8, 14)):
            tokens[i] += rng.choice([",", ".", ";"])
        tokens[0] = tokens[0].capitalize()
        texts.append(" ".join(tokens) + ".")
    return texts


class Speech:
    """espeak-ng (brainrl's fast speech engine) when available, else a labelled silent placeholder.

    With ``workers > 1`` a batch is spoken by a pool of processes (EspeakEngine(workers=N)); each text is
    still spoken by a freshly loaded espeak, so the stimuli equal those of one process (``check_parallel``).
    """

    def __init__(self, workers: int = 1):
        self.workers = workers
        try:
            from brainrl.stimulus import get_speech_engine

            self.engine = get_speech_engine("espeak", workers=workers)
            self.engine.synthesize_one("warm up")
            if workers > 1:  # start every pool process now, not inside a timed run
                self.engine.synthesize([f"warm up number {i}." for i in range(2 * workers)])
            self.name = f"espeak ({self.engine.version}), {workers} process{'es' if workers > 1 else ''}"
        except Exception as error:  # noqa: BLE001 - report what ran
            self.engine = None
            self.name = f"placeholder: 0.42 s/word silence (espeak unavailable: {type(error).__name__})"

    def check_parallel(self, texts: list[str]) -> dict[str, object]:
        """Speak ``texts`` with the pool and with one process: same samples, same word timings?"""
        if self.engine is None or self.workers == 1:
            return {"checked": False, "reason": "no pool (espeak unavailable or --speech-workers 1)"}
        from brainrl.stimulus import get_speech_engine

        pooled = self.engine.synthesize(texts)
        single = get_speech_engine("espeak", out_dir=self.engine.out_dir, workers=1).synthesize(texts)
        same_audio = all(np.array_equal(a.load_waveform(), b.load_waveform()) for a, b in zip(pooled, single))
        same_words = all([(w.text, w.start, w.duration) for w in a.words] == [(w.text, w.start, w.duration)
                                                                             for w in b.words]
                         for a, b in zip(pooled, single))
        return {"checked": True, "texts": len(texts), "identical_waveforms": same_audio,
                "identical_word_timings": same_words}

    def close(self) -> None:
        if self.engine is not None and hasattr(self.engine, "close"):
            self.engine.close()

    def __call__(self, texts: list[str]) -> list[tuple[list[tuple[str, float, float]], np.ndarray, int, float]]:
        out = []
        if self.engine is not None:
            for stim in self.engine.synthesize(texts):
                words = [(w.text, w.start, w.duration) for w in stim.words]
                out.append((words, stim.load_waveform(), stim.sample_rate, stim.duration))
            return out
        for text in texts:
            tokens = text.split()
            words = [(t, 0.42 * i, 0.4) for i, t in enumerate(tokens)]
            duration = 0.42 * len(tokens) + 0.3
            out.append((words, np.zeros(int(16000 * duration), np.float32), 16000, duration))
        return out


def to_16k(waveform: np.ndarray, rate: int) -> np.ndarray:
    """CPU resampling to 16 kHz, filtered in float64 (scipy filters float32 input in float32, which moves
    the fbank features by ~1e-4; the GPU front end filters in float64 as well)."""
    if rate == 16000:
        return waveform
    from scipy.signal import resample_poly

    g = math.gcd(16000, rate)
    return resample_poly(waveform.astype(np.float64), 16000 // g, rate // g).astype(np.float32)


# -- stages ------------------------------------------------------------------------------------------
class Pipeline:
    def __init__(self, args, tokenizer):
        self.args = args
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.tokenizer = tokenizer
        from transformers import SeamlessM4TFeatureExtractor

        self.fbank = SeamlessM4TFeatureExtractor()  # --fbank cpu, and the reference reconstruction
        self.fbank_torch = SeamlessFbank(self.device, compute_dtype=getattr(torch, args.fbank_dtype))  # --fbank gpu
        self.resamplers: dict[int, PolyphaseResampler] = {}
        self.fbank_seconds = 0.0  # resampling + fbank + CMVN, part of the audio stage
        self.last_clips: list[tuple[np.ndarray, int, float]] = []
        # set: every (re)build draws the same weights, so the reference path's reloads equal the resident models
        self.feature_seed: int | None = getattr(args, "feature_seed", None)
        self.llama, self.w2v = self.build_feature_models()
        self.text_groups = layer_groups(self.llama.config.num_hidden_layers)
        n = self.w2v.config.num_hidden_layers  # all n+1 hidden states, groups [n/2, 3n/4) and [3n/4, n]
        self.audio_groups = [list(range(n // 2, (3 * n) // 4)), list(range((3 * n) // 4, n + 1))]
        self.fusion = build_fusion(args.tiny, self.llama.config.hidden_size, self.w2v.config.hidden_size)
        self.fusion = self.fusion.to(self.device, self.dtype).eval()
        self.one_pass = OnePassTextFeatures(self.llama, tokenizer, self.text_groups)

    def build_feature_models(self):
        if self.feature_seed is None:
            return self._init_feature_models()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's random stream is left as it was
            torch.manual_seed(self.feature_seed)
            return self._init_feature_models()

    def _init_feature_models(self):
        from transformers import LlamaModel, Wav2Vec2BertModel

        with torch.device(self.device):
            llama = LlamaModel(llama_config(self.args.tiny)).to(self.dtype).eval()
            w2v = Wav2Vec2BertModel(w2v_config(self.args.tiny)).to(self.dtype).eval()
        return llama, w2v

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def front_end(self, chunk: list[tuple[np.ndarray, int, float]], kind: str) -> dict[str, torch.Tensor]:
        """Clips -> w2v-bert inputs (B, T, 160) + mask. "cpu": scipy + transformers' extractor per clip;
        "gpu": batched torch resampling + fbank on the pipeline's device (same numbers, see tests)."""
        if kind == "cpu":
            waves = [to_16k(w, r) for w, r, _ in chunk]
            return self.fbank(waves, sampling_rate=16000, return_tensors="pt", padding=True, return_attention_mask=True)
        clips_16k: list[torch.Tensor | None] = [None] * len(chunk)
        rates = [r for _, r, _ in chunk]
        for rate in sorted(set(rates)):
            rows = [i for i, r in enumerate(rates) if r == rate]
            lengths = [len(chunk[i][0]) for i in rows]
            padded = torch.zeros(len(rows), max(lengths), device=self.device)
            for k, i in enumerate(rows):
                wave = torch.from_numpy(np.ascontiguousarray(chunk[i][0], np.float32))
                padded[k, : lengths[k]] = wave.to(self.device)
            if rate not in self.resamplers:
                self.resamplers[rate] = PolyphaseResampler(rate, 16000, self.device)
            resampled, out_lengths = self.resamplers[rate](padded, lengths)
            resampled = resampled.float()  # 16 kHz float32, as the CPU path hands to the extractor
            for k, i in enumerate(rows):
                clips_16k[i] = resampled[k, : out_lengths[k]]
        if len(set(rates)) == 1:
            return self.fbank_torch.from_padded(resampled, out_lengths)
        return self.fbank_torch(clips_16k)

    def encode_audio(self, feats: dict[str, torch.Tensor], chunk: list, w2v) -> list[torch.Tensor]:
        """w2v-bert over one batch of front-end outputs -> per clip (T at 2 Hz, n_groups * d)."""
        out = []
        with torch.inference_mode():
            hidden = w2v(
                input_features=feats["input_features"].to(self.device, self.dtype),
                attention_mask=feats["attention_mask"].to(self.device),
                output_hidden_states=True,
            ).hidden_states
            stacked = torch.stack([torch.stack([hidden[i] for i in g]).float().mean(0) for g in self.audio_groups])
            frames_per_clip = feats["attention_mask"].sum(1).tolist()
            for row, (_, _, duration) in enumerate(chunk):
                n_frames = int(frames_per_clip[row])
                n_steps = max(1, round(GRID_HZ * duration))
                pick = torch.linspace(0, n_frames - 1, n_steps, device=stacked.device).round().long()  # nearest
                x = stacked[:, row, pick]  # (groups, T, d)
                out.append(x.permute(1, 0, 2).reshape(n_steps, -1))
        return out

    def audio_features(self, clips: list[tuple[np.ndarray, int, float]], w2v=None,
                       front_end: str | None = None) -> list[torch.Tensor]:
        """Per clip (T at 2 Hz, n_groups * d): front end with per-clip CMVN, batched forward with a mask."""
        w2v = w2v or self.w2v
        kind = front_end or self.args.fbank
        out = []
        step = self.args.audio_batch
        for begin in range(0, len(clips), step):
            chunk = clips[begin : begin + step]
            self.sync()
            t0 = time.perf_counter()
            feats = self.front_end(chunk, kind)
            self.sync()
            self.fbank_seconds += time.perf_counter() - t0
            out.extend(self.encode_audio(feats, chunk, w2v))
        return out

    def compare_front_ends(self, clips: list[tuple[np.ndarray, int, float]], reps: int) -> dict[str, object]:
        """Both front ends on the same clips: ms per clip, max |diff| of the fbank features, and of the
        grouped w2v-bert features (2 Hz) they lead to, over each clip's frames."""
        step = self.args.audio_batch
        chunks = [clips[b : b + step] for b in range(0, len(clips), step)]

        def timed(kind: str) -> float:
            runs = []
            for _ in range(reps + 1):  # the first run warms up
                self.sync()
                t0 = time.perf_counter()
                for chunk in chunks:
                    self.front_end(chunk, kind)
                self.sync()
                runs.append(time.perf_counter() - t0)
            return statistics.median(runs[1:]) / len(clips)

        out: dict[str, object] = {"clips": len(clips), "gpu_fbank_compute_dtype": self.args.fbank_dtype,
                                  "cpu_ms_per_clip": 1000 * timed("cpu"), "gpu_ms_per_clip": 1000 * timed("gpu")}
        feat_diff, masks_equal, w2v_diff, w2v_scale, w2v_r = 0.0, True, 0.0, 0.0, 1.0
        for chunk in chunks:
            cpu, gpu = self.front_end(chunk, "cpu"), self.front_end(chunk, "gpu")
            masks_equal &= bool(torch.equal(cpu["attention_mask"], gpu["attention_mask"].cpu()))
            if cpu["input_features"].shape != gpu["input_features"].shape:
                raise RuntimeError(f"front ends disagree in shape: {tuple(cpu['input_features'].shape)} vs "
                                   f"{tuple(gpu['input_features'].shape)}")
            feat_diff = max(feat_diff, (cpu["input_features"] - gpu["input_features"].cpu()).abs().max().item())
            for a, b in zip(self.encode_audio(cpu, chunk, self.w2v), self.encode_audio(gpu, chunk, self.w2v)):
                w2v_diff = max(w2v_diff, (a - b).abs().max().item())
                w2v_scale = max(w2v_scale, a.abs().max().item())
                w2v_r = min(w2v_r, float(np.corrcoef(a.ravel().cpu().numpy(), b.ravel().cpu().numpy())[0, 1]))
        out.update({"fbank_max_abs_diff": feat_diff, "masks_equal": masks_equal,
                    "w2v_features_max_abs_diff": w2v_diff, "w2v_features_max_abs": w2v_scale,
                    "w2v_features_min_clip_r": w2v_r})
        return out

    def fuse(self, word_feats: list[np.ndarray | torch.Tensor], words: list, audio: list[torch.Tensor],
             durations: list[float]) -> list[np.ndarray]:
        """Place static word vectors on the 2 Hz grid (summed per bin), run B windows, crop to ceil(duration)."""
        steps = int(WINDOW_S * GRID_HZ)
        batch = len(words)
        text_dim = self.fusion.text.in_features
        text = torch.zeros(batch, steps, text_dim, device=self.device)
        audio_grid = torch.zeros(batch, steps, self.fusion.audio.in_features, device=self.device)
        for b in range(batch):
            feats = torch.as_tensor(word_feats[b], device=self.device).reshape(len(words[b]), -1)
            for w, (_, start, duration) in enumerate(words[b]):
                first = round(GRID_HZ * start)
                count = max(1, round(GRID_HZ * duration))
                text[b, first : min(steps, first + count)] += feats[w]
            n = min(steps, audio[b].shape[0])
            audio_grid[b, :n] = audio[b][:n].to(audio_grid.dtype)
        with torch.inference_mode():
            y = self.fusion(text.to(self.dtype), audio_grid.to(self.dtype)).float()  # (B, 20484, 100)
        y = y.transpose(1, 2).cpu().numpy()
        return [y[b, : max(1, math.ceil(durations[b]))] for b in range(batch)]

    # -- text features on their own ------------------------------------------------------------------
    def compare_text_features(self, texts: list[str], batch: int, reps: int) -> dict[str, float]:
        """ms per text: per-word passes (TRIBE) vs one pass at batch 1 and at ``batch``, resident model."""
        words = [t.split() for t in texts[:batch]]
        embed = self.llama.get_input_embeddings().weight.numel()
        flop_per_token = 2 * (sum(p.numel() for p in self.llama.parameters()) - embed)
        one_pass_tokens = statistics.mean(len(ids) for ids, _ in self.one_pass.tokenize(words))
        per_word_tokens = statistics.mean(
            sum(len(self.tokenizer.encode(" ".join(w[: i + 1]), add_special_tokens=False)) for i in range(len(w)))
            for w in words
        )

        def timed(fn) -> float:
            fn()  # warm-up
            runs = []
            for _ in range(reps):
                self.sync()
                t0 = time.perf_counter()
                fn()
                self.sync()
                runs.append(time.perf_counter() - t0)
            return statistics.median(runs)

        per_word = timed(lambda: [reference_word_features(self.llama, self.tokenizer, w, self.text_groups, 4)
                                  for w in words[: max(1, batch // 8)]]) / max(1, batch // 8)
        single = timed(lambda: [self.one_pass([w], batch_size=1) for w in words[: max(1, batch // 8)]]) / max(1, batch // 8)
        batched = timed(lambda: self.one_pass(words, batch_size=batch)) / batch
        fast = self.one_pass(words[:4], batch_size=4)
        ref = [reference_word_features(self.llama, self.tokenizer, w, self.text_groups, 4) for w in words[:4]]
        r = [np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1] for a, b in zip(fast, ref) for i in range(len(a))]
        out = {
            "per_word_ms_per_text": 1000 * per_word,
            "one_pass_batch1_ms_per_text": 1000 * single,
            f"one_pass_batch{batch}_ms_per_text": 1000 * batched,
            "speedup_batch1": per_word / single,
            f"speedup_batch{batch}": per_word / batched,
            "per_word_tflop_per_text": flop_per_token * per_word_tokens / 1e12,
            "one_pass_tflop_per_text": flop_per_token * one_pass_tokens / 1e12,
            f"one_pass_batch{batch}_tflops_reached": flop_per_token * one_pass_tokens / batched / 1e12,
            "tokens_per_text": one_pass_tokens,
            "median_word_r": float(np.median(r)),
            "min_word_r": float(np.min(r)),
            "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(fast, ref))),
            "max_abs_feature": float(max(np.abs(b).max() for b in ref)),
            "compute_dtype": self.args.dtype,
        }
        return out

    # -- the two pipelines ---------------------------------------------------------------------------
    def fast(self, texts: list[str], speech: Speech) -> tuple[dict[str, float], list[np.ndarray]]:
        t = {}
        t0 = time.perf_counter()
        spoken = speech(texts)
        t["speech"] = time.perf_counter() - t0
        words = [s[0] for s in spoken]
        self.sync()
        t0 = time.perf_counter()
        text_feats = self.one_pass([[w for w, _, _ in ws] for ws in words], batch_size=len(texts))
        self.sync()
        t["text_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.fbank_seconds = 0.0
        self.last_clips = [(s[1], s[2], s[3]) for s in spoken]
        audio = self.audio_features(self.last_clips)
        self.sync()
        t[f"audio_fbank_{self.args.fbank}"] = self.fbank_seconds
        t["audio_w2v_bert"] = time.perf_counter() - t0 - self.fbank_seconds
        t0 = time.perf_counter()
        maps = self.fuse(text_feats, words, audio, [s[3] for s in spoken])
        self.sync()
        t["fusion"] = time.perf_counter() - t0
        t["total"] = sum(t.values())
        return t, maps

    def reference_one(self, text: str, speech: Speech) -> dict[str, float]:
        return self.reference_predict(text, speech)[0]

    def reference_predict(self, text: str, speech: Speech) -> tuple[dict[str, float], np.ndarray]:
        """One completion through the reference reconstruction: stage seconds and its (T, 20484) map."""
        t = {}
        t0 = time.perf_counter()
        [(words, wave, rate, duration)] = speech([text])
        t["speech (espeak here; gTTS in the reference)"] = time.perf_counter() - t0
        t["whisperx"] = float("nan")  # not run: needs the network and a uvx subprocess
        self.sync()
        t0 = time.perf_counter()
        llama, w2v = self.build_feature_models()  # TRIBE frees and reloads both on every predict
        self.sync()
        t["model_reload (random init on device; disk load not included)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        feats = reference_word_features(llama, self.tokenizer, [w for w, _, _ in words], self.text_groups, batch_size=4)
        self.sync()
        t["text_features (per-word contexts, batches of 4)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        audio = self.audio_features([(wave, rate, duration)], w2v=w2v, front_end="cpu")  # TRIBE's way
        self.sync()
        t["audio_features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        [brain_map] = self.fuse([feats], [words], audio, [duration])
        self.sync()
        t["fusion"] = time.perf_counter() - t0
        del llama, w2v
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        t["total_measured"] = sum(v for v in t.values() if not math.isnan(v))
        return t, brain_map


def versions() -> dict[str, str]:
    import scipy
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__,
            "cuda": torch.version.cuda or "none"}


# -- the shipped backend ------------------------------------------------------------------------------------
def fusion_timer(engine) -> tuple[list[float], tuple]:
    """Seconds spent inside TRIBE's fusion model (``engine._model._model``), summed over its calls, through
    forward hooks (synchronising CUDA around each call); returns the running total and the hook handles."""
    brain = engine._model._model
    cuda = engine.config.device.startswith("cuda")
    total, started = [0.0], [0.0]

    def before(module, args):
        if cuda:
            torch.cuda.synchronize()
        started[0] = time.perf_counter()

    def after(module, args, output):
        if cuda:
            torch.cuda.synchronize()
        total[0] += time.perf_counter() - started[0]

    return total, (brain.register_forward_pre_hook(before), brain.register_forward_hook(after))


def backend_run(engine, speech: "Speech", texts: list[str], batch: int) -> tuple[dict[str, float], list]:
    """One batch through the shipped backend: seconds per stage and the maps."""
    t0 = time.perf_counter()
    stimuli = speech.engine.synthesize(texts) if speech.engine is not None else None
    if stimuli is None:
        raise RuntimeError("--backend needs espeak (espeakng-loader) for real stimuli.")
    speech_s = time.perf_counter() - t0
    text0, audio0 = engine.text_stats.seconds, engine.audio_stats.seconds
    direct0 = engine.direct_stats.as_dict()
    fusion, hooks = fusion_timer(engine)
    if engine.config.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        maps = engine.predict(stimuli)
        if engine.config.device.startswith("cuda"):
            torch.cuda.synchronize()
    finally:
        for hook in hooks:
            hook.remove()
    predict_s = time.perf_counter() - t0
    failed = [m for m in maps if isinstance(m, str)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(maps)} items failed: {failed[0]}")
    text_s = engine.text_stats.seconds - text0
    audio_s = engine.audio_stats.seconds - audio0
    if engine.config.predict_path == "direct":
        # the direct path computes the audio samples and features in a background thread while it builds the
        # word events and text features: its stages are wall-clock spans of the calling thread, the per-thread feature times
        # are shown beside them (they overlap, so they do not add up to the total)
        from brainrl.brain.tribe.direct import DirectStats

        d = {k: v - direct0[k] for k, v in engine.direct_stats.as_dict().items() if k.startswith("seconds_")}
        features = DirectStats(**d).seconds_overlapped
        stages = {"speech": speech_s,
                  "events + text features + text windows || audio features (wall)": features,
                  "(text features alone)": text_s, "(text windows alone)": d["seconds_tensors_text"],
                  "(audio features alone, other thread)": audio_s,
                  "audio windows": d["seconds_tensors"], "fusion": fusion[0],
                  "rest (audio formats, split, checks)": predict_s - features - d["seconds_tensors"] - fusion[0],
                  "total": speech_s + predict_s}
        return stages, maps
    stages = {"speech": speech_s, "text_features": text_s, "audio_features": audio_s, "fusion": fusion[0],
              "rest (events, windows, data loading, split; all of TRIBE's own feature paths when they run)":
                  predict_s - text_s - audio_s - fusion[0],
              "total": speech_s + predict_s}
    return stages, maps


def profile_backend(engine, speech: "Speech", texts: list[str], batch: int, folder: Path, label: str) -> None:
    """Where a batch's time goes: one batch under cProfile (Python functions, cumulative and own time) and one
    under torch.profiler (operators, CPU and CUDA time), written as text tables to ``folder``."""
    import cProfile
    import pstats

    folder.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    profiler.enable()
    backend_run(engine, speech, texts[:batch], batch)
    profiler.disable()
    with open(folder / f"cprofile_{label}_{batch}.txt", "w") as handle:
        stats = pstats.Stats(profiler, stream=handle)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if engine.config.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        backend_run(engine, speech, texts[batch: 2 * batch], batch)
    table = prof.key_averages()
    with open(folder / f"torchprof_{label}_{batch}.txt", "w") as handle:
        for key in ("self_cpu_time_total", "device_time_total" if len(activities) > 1 else "cpu_time_total"):
            handle.write(f"sorted by {key}\n{table.table(sort_by=key, row_limit=35)}\n\n")
    print(f"  profile of {label} at batch {batch} written to {folder}")


def enter_backend_standin(work: Path, shape: str, corpus: list[str], flag: str = "--backend") -> Path:
    """Make TRIBE v2's code importable and its random-weight stand-in (brainrl/brain/tribe/standin.py) ready in
    ``work`` (built once, reused by later runs), and enter its hub folder, where the feature models load
    from (./meta-llama/..., ./facebook/...). Returns the checkpoint folder for ``TribeConfig.checkpoint_dir``."""
    from brainrl.brain.tribe import standin

    src = standin.tribev2_source()
    if src is None:
        raise SystemExit(f"{flag} runs TRIBE v2's code: set {standin.SRC_ENV} to a checkout of facebookresearch/tribev2 "
                         f"at {standin.TRIBEV2_COMMIT[:7]} (scripts/setup_tribe_tier.sh)")
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    work = work.resolve()
    os.environ.setdefault("DATAPATH", str(work / "data"))  # tribev2.grids.defaults reads both at import
    os.environ.setdefault("SAVEPATH", str(work / "save"))
    checkpoint = work / "ckpt" / "base"
    shape_file = work / "shape.txt"
    if (checkpoint / "best.ckpt").exists() and shape_file.exists() and shape_file.read_text() != shape:
        raise SystemExit(f"{work} holds a {shape_file.read_text()!r} stand-in, not {shape!r}: use another work folder")
    if not (checkpoint / "best.ckpt").exists():
        standin.build_feature_models(work / "hub", corpus, shape=shape)
        standin.build_checkpoint("base", checkpoint, work / "scratch", shape=shape)
        shape_file.write_text(shape)
    os.chdir(work / "hub")
    return checkpoint


def backend_main(args) -> int:
    from brainrl.brain.tribe import standin
    from brainrl.brain.tribe.config import PRECISION_PARTS, TribeConfig
    from brainrl.brain.tribe.engine import TribeEngine

    work = Path(args.workdir or Path(args.out).with_suffix("").as_posix() + "-standin")
    shape = "tiny" if args.tiny else "real"
    batches = [int(b) for b in args.batches.split(",")]
    extra_batches = 2 if args.profile else 0  # one batch under cProfile, one under torch.profiler
    texts = make_texts(sum(b * (args.reps + 1) for b in batches) + extra_batches * max(batches), args.words, args.seed)
    checkpoint = enter_backend_standin(work, shape, texts)
    speech = Speech(args.speech_workers)
    paths = [p.strip() for p in args.predict_path.split(",") if p.strip()]
    if not paths or any(p not in ("tribe", "direct") for p in paths):
        raise SystemExit(f"--predict-path takes tribe, direct or tribe,direct; got {args.predict_path!r}")
    kept = tuple(p for p in args.bf16_float32_parts.split(",") if p) if args.dtype == "bfloat16" else ()
    # (label, dtype, text features, audio features, float32 parts, matmul precision)
    settings = [("fast", args.dtype, "one-pass", "batched", kept, args.matmul_precision)]
    if args.compare_reference:
        settings.append(("tribe-per-word-per-clip", args.dtype, "reference", "reference", kept, args.matmul_precision))
    sweep: list[str] = []  # settings compared with float32 itself (the parity each would be accepted by)
    if args.dtype == "bfloat16":
        if args.bf16_parts_sweep:
            # each part alone kept in float32 (TribeConfig.float32_parts): which part's bf16 error reaches the maps;
            # the text model's also with TF32 matmuls (matmul_precision="high")
            variants = [(f"fast-{part}32", (part,), "highest") for part in PRECISION_PARTS]
            variants.append(("fast-text32-tf32", ("text",), "high"))
            variants = [v for v in variants if (v[1], v[2]) != (kept, args.matmul_precision)]
            settings += [(label, "bfloat16", "one-pass", "batched", parts, precision) for label, parts, precision in variants]
            sweep = [label for label, _, _ in variants]
        settings.append(("fast-fp32", "float32", "one-pass", "batched", (), "highest"))
    # each setting through each predict path, the tribe path under the setting's own label
    suffix = {"tribe": "", "direct": "-direct"}
    settings = [(label + suffix[path], dtype, text_mode, audio_mode, parts, precision, path)
                for label, dtype, text_mode, audio_mode, parts, precision in settings for path in paths]
    sweep_runs = [(label + suffix[path], path) for label in sweep for path in paths]
    results, maps_by_setting = {}, {}
    for label, dtype, text_mode, audio_mode, parts, precision, path in settings:
        extra = {"allow_bf16": True, "float32_parts": parts} if dtype == "bfloat16" else {}
        engine = TribeEngine(TribeConfig(checkpoint_dir=str(checkpoint), device=args.device, dtype=dtype,
                                         text_features=text_mode, audio_features=audio_mode, cache_max_gb=0,
                                         predict_path=path, audio_batch_size=args.audio_batch,
                                         matmul_precision=precision,
                                         max_stimuli_per_call=max(batches), cache_folder=str(checkpoint.parent.parent / f"cache-{label}"),
                                         **extra)).load()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        results[label] = {"load_s": engine.load_seconds, "predict_path": path, "dtype": dtype,
                          "float32_parts": list(parts), "matmul_precision": precision}
        cursor = 0
        for batch in batches:
            backend_run(engine, speech, texts[cursor: cursor + batch], batch)  # warm-up
            cursor += batch
            runs, last = [], None
            for _ in range(args.reps):
                timing, last = backend_run(engine, speech, texts[cursor: cursor + batch], batch)
                cursor += batch
                runs.append(timing)
            results[label][batch] = {k: 1000 * statistics.median(r[k] for r in runs) / batch for k in runs[0]}
            maps_by_setting.setdefault(label, {})[batch] = last
        if args.device.startswith("cuda"):
            results[label]["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
        if path == "direct":
            results[label]["direct_stats"] = engine.direct_stats.as_dict()
        if args.profile:
            batch = max(batches)
            profile_backend(engine, speech, texts[cursor: cursor + 2 * batch], batch, Path(args.profile), label)
            cursor += 2 * batch
        engine = None
    parity = {}
    first = settings[0][0]  # "fast" (or "fast-direct" with --predict-path direct)
    pairs = [(first, label) for label in maps_by_setting if label != first]
    # each sweep setting against float32 itself (the parity it would be accepted by)
    pairs += [(f"fast-fp32{suffix[path]}", label) for label, path in sweep_runs
              if f"fast-fp32{suffix[path]}" in maps_by_setting and (f"fast-fp32{suffix[path]}", label) not in pairs]
    # each direct run against the same setting through TRIBE's own predict
    pairs += [(label[: -len("-direct")], label) for label in maps_by_setting
              if label.endswith("-direct") and label[: -len("-direct")] in maps_by_setting and label[: -len("-direct")] != first]
    for base, label in pairs:
        a = [m for b in batches for m in maps_by_setting[label][b]]
        f = [m for b in batches for m in maps_by_setting[base][b]]
        if any(x.shape != y.shape for x, y in zip(a, f)):
            parity[f"{base} vs {label}"] = {"shapes_differ": [[list(x.shape), list(y.shape)] for x, y in zip(a, f)]}
            continue
        r = [float(np.corrcoef(x.ravel(), y.ravel())[0, 1]) for x, y in zip(a, f)]
        rel = [float(np.abs(x - y).max() / np.abs(x).max()) for x, y in zip(a, f)]
        parity[f"{base} vs {label}"] = {"min_map_r": min(r), "max_rel_diff": max(rel),
                                        "max_abs_diff": max(float(np.abs(x - y).max()) for x, y in zip(a, f)),
                                        "note": "same texts; maps of the last run of each batch size"}
    print(f"\nshipped TRIBE backend (TribeEngine), stand-in {shape} shapes, random weights, {args.words}-word texts, "
          f"{args.dtype} on {args.device}; ms per completion (median of {args.reps})")
    for label, rows in results.items():
        print(f"  {label}: load {rows['load_s']:.1f} s" + (f", peak GPU {rows['peak_gpu_gb']:.1f} GB" if "peak_gpu_gb" in rows else ""))
        for batch in batches:
            print(f"    batch {batch:>3}: " + ", ".join(f"{k} {v:.1f}" for k, v in rows[batch].items()))
    for key, value in parity.items():
        print(f"  parity {key}: {value}")
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    out = {"mode": "backend", "config": vars(args), "shape": shape, "device_name": device_name, "host": platform.node(),
           "results": results, "parity": parity,
           "versions": versions(), "tribev2_commit": standin.TRIBEV2_COMMIT,
           "notes": "random weights; the shipped backend (TribeEngine.predict; predict_path per setting: tribe = TRIBE "
                    "v2's TribeModel.predict, direct = its input tensors built without the events DataFrame); "
                    "speech = espeak pool"}
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tiny", action="store_true", help="small configs for a CPU smoke test")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per batch size (after a warm-up)")
    parser.add_argument("--reference-items", type=int, default=2, help="completions through the reference path")
    parser.add_argument("--audio-batch", type=int, default=16, help="clips per w2v-bert forward")
    parser.add_argument("--speech-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="espeak processes for batch synthesis (default min(8, CPU count); 1 = sequential)")
    parser.add_argument("--fbank", default="gpu", choices=["gpu", "cpu"],
                        help="audio front end: gpu = batched torch resampling + fbank on --device; "
                             "cpu = scipy + transformers' SeamlessM4TFeatureExtractor, one clip at a time")
    parser.add_argument("--fbank-dtype", default="float64", choices=["float64", "float32"],
                        help="compute dtype of the torch front end (float64 matches the extractor to ~1e-6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_tribe.json")
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="--backend: also profile one batch of the largest size per setting (cProfile and "
                             "torch.profiler tables written to DIR)")
    parser.add_argument("--backend", action="store_true", help="time the shipped backend (TribeEngine) on TRIBE v2's code")
    parser.add_argument("--compare-reference", action="store_true",
                        help="--backend: also time TRIBE's per-word text and per-clip audio paths")
    parser.add_argument("--workdir", default=None, help="--backend: folder for the stand-in (default <out>-standin)")
    parser.add_argument("--bf16-float32-parts", default="",
                        help="--backend with --dtype bfloat16: parts kept in float32 (TribeConfig.float32_parts), "
                             "comma-separated among text,audio,fusion")
    parser.add_argument("--matmul-precision", default="highest", choices=["highest", "high"],
                        help="--backend: TribeConfig.matmul_precision of the main setting (high: TF32 float32 matmuls)")
    parser.add_argument("--bf16-parts-sweep", action="store_true",
                        help="--backend with --dtype bfloat16: also each part alone kept in float32, with its parity")
    parser.add_argument("--predict-path", default="tribe",
                        help="--backend: the backend's predict path(s), comma-separated: tribe (TribeModel.predict), "
                             "direct (TRIBE's input tensors built without its DataFrame), or tribe,direct for both")
    args = parser.parse_args(argv)
    if args.backend:
        args.out = str(Path(args.out).resolve())
        return backend_main(args)
    torch.manual_seed(args.seed)
    batches = [int(b) for b in args.batches.split(",")]
    if args.tiny:
        torch.set_num_threads(1)

    texts = make_texts(sum(b * (args.reps + 1) for b in batches) + args.reference_items, args.words, args.seed)
    tokenizer = build_byte_bpe_tokenizer(texts, vocab_size=4000 if not args.tiny else 1000)
    tokens_per_text = statistics.mean(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts[:32])
    if args.speech_workers < 1:
        parser.error(f"--speech-workers must be at least 1, got {args.speech_workers}")
    speech = Speech(args.speech_workers)
    speech_check = speech.check_parallel(texts[: max(2, min(4, args.speech_workers))])
    pipe = Pipeline(args, tokenizer)
    params = {
        "llama": sum(p.numel() for p in pipe.llama.parameters()),
        "w2v_bert": sum(p.numel() for p in pipe.w2v.parameters()),
        "fusion": sum(p.numel() for p in pipe.fusion.parameters()),
    }
    results = {"fast": {}, "reference": {}}
    cursor = 0
    for batch in batches:
        pipe.fast(texts[cursor : cursor + batch], speech)  # warm-up (kernels, allocator)
        cursor += batch
        runs = []
        for _ in range(args.reps):
            timing, maps = pipe.fast(texts[cursor : cursor + batch], speech)
            cursor += batch
            assert len(maps) == batch and all(m.shape[1] == N_VERTICES for m in maps), [m.shape for m in maps]
            runs.append(timing)
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results["fast"][batch] = {k: 1000 * v / batch for k, v in median.items()}  # ms per completion
    ref_runs = [pipe.reference_one(t, speech) for t in texts[-args.reference_items :]]
    results["reference"] = {k: 1000 * statistics.median(r[k] for r in ref_runs) if not math.isnan(ref_runs[0][k])
                            else None for k in ref_runs[0]}
    text_batch = max(batches)
    text_compare = pipe.compare_text_features(texts[:text_batch], text_batch, max(1, args.reps))
    front_end_compare = pipe.compare_front_ends(pipe.last_clips, max(1, args.reps))  # last run of the largest batch
    speech.close()

    device_name = torch.cuda.get_device_name(0) if pipe.device.type == "cuda" else platform.processor() or "cpu"
    print(f"\nTRIBE v2-shaped pipeline, random weights, {args.words}-word texts (~{tokens_per_text:.0f} tokens), "
          f"{args.dtype} on {device_name}{' [tiny configs]' if args.tiny else ''}")
    print(f"speech: {speech.name}; params: " + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in params.items()))
    front_end_name = (f"torch on {pipe.device}, {args.fbank_dtype}" if args.fbank == "gpu"
                      else "scipy + SeamlessM4TFeatureExtractor")
    print(f"audio front end: {args.fbank} ({front_end_name}); parallel speech vs one process: {speech_check}")
    stages = list(next(iter(results["fast"].values())))
    print("\nfast path, ms per completion (median of %d runs)" % args.reps)
    print(f"{'batch':>6} " + " ".join(f"{s:>15}" for s in stages))
    for batch, row in results["fast"].items():
        print(f"{batch:>6} " + " ".join(f"{row[s]:>15.1f}" for s in stages))
    print(f"\nreference reconstruction, ms per completion (median of {args.reference_items}, sequential)")
    for stage, value in results["reference"].items():
        print(f"  {stage:<62} {'not run' if value is None else f'{value:10.1f}'}")
    print(f"\ntext features alone, resident Llama, ms per text (per-word passes: median over {max(1, text_batch // 8)} texts)")
    for key, value in text_compare.items():
        if isinstance(value, str):
            print(f"  {key:<40} {value:>12}")
        elif key.endswith("_r"):
            print(f"  {key:<40} {value:12.6f}")
        else:
            print(f"  {key:<40} {value:12.4g}")
    ref_total = results["reference"]["total_measured"]
    for batch, row in results["fast"].items():
        print(f"  speed-up at batch {batch:>2}: {ref_total / row['total']:.1f}x (measured stages only; WhisperX not run)")
    print(f"\naudio front end alone, {front_end_compare['clips']} clips (batches of {args.audio_batch}), "
          f"median of {max(1, args.reps)}")
    for key, value in front_end_compare.items():
        if key == "clips":
            continue
        text = f"{value:12.4g}" if isinstance(value, float) and not key.endswith("_r") else (
            f"{value:12.6f}" if isinstance(value, float) else f"{value!s:>12}")
        print(f"  {key:<40} {text}")
    goal = results["fast"].get(32)
    goal_met = None if goal is None else bool(goal["total"] <= 100.0)
    out = {
        "config": vars(args), "device": device_name, "torch": torch.__version__, "tokens_per_text": tokens_per_text,
        "speech": speech.name, "speech_parallel_check": speech_check, "params": params,
        "ms_per_completion": results, "text_features": text_compare, "audio_front_end": front_end_compare,
        "goal_100ms_at_batch32_met": goal_met, "versions": versions(),
        "notes": "random weights; reference reload = random init on device (no disk read); whisperx and gTTS not run",
    }
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {args.out}")
    print("goal ≤ 100 ms at batch 32: " + ("not measured (batch 32 not run)" if goal is None else
          f"{'met' if goal_met else 'not met'} ({goal['total']:.1f} ms per completion, {args.dtype}, "
          f"fbank {args.fbank}{' [tiny configs]' if args.tiny else ''})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
