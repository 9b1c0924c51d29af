#!/usr/bin/env python
"""Seconds per training step, brainrl's trainers (AWSFT and GRPO) vs a reconstruction of the anchor's loop.

The loops run in the same process on the same policy weights, the same prompt, the same sampling
settings (the anchor's: T 1.0, top-p 0.8, top-k 20, repetition penalty 1.05), the same max_new_tokens
and a reward of the same model shape (below):

- brainrl AWSFT: ``AWSFTTrainer.train_step`` (the product's step): one batched ``generate`` through the
  merged LoRA weights (static KV cache + compiled decoding on CUDA: ``policy.generation``); all rewards
  in one call; the reference = the same model with its LoRA adapter disabled; one batched
  forward/backward with the k3 KL (brainrl.train.awsft).
- brainrl GRPO: the product's ``BrainrlGRPOTrainer`` (TRL's GRPOTrainer with brainrl's generation
  engine, brainrl.train.grpo), one optimiser step per G completions of the prompt; generation and reward
  seconds are timed around TRL's own methods, the rest of the step (reference log-probs, advantages,
  loss, backward, optimiser) is reported as update. Its first step (full length) is the warm-up.
- anchor (reconstructed from its documented behaviour; see docs/training.md): one batched ``generate`` of
  n copies of the prompt; rewards one completion at a time; a second deep-copied frozen reference model;
  per-completion forward passes of policy and reference with the full-vocabulary KL
  (``F.kl_div(..., log_target=True, reduction="batchmean")``); LoRA dropout on; one backward.

Rewards (``--reward``; left-Broca mean of each map in both cases):

- ``synthetic`` (default on CPU): the recipe's brain pipeline with the synthetic model, every cache off;
  both loops call the same object (brainrl with the whole batch, the anchor with one text per call).
- ``tribe`` (default on CUDA): brainrl scores the G completions of a step in one call of its own reward,
  ``ROIReward`` on a ``BrainPipeline`` with ``model: tribe``, i.e. the shipped backend (``TribeEngine``
  in-process: TRIBE v2's own predict from $BRAINRL_TRIBEV2_SRC with brainrl's one-pass text features and
  batched audio features, resident models, espeak speech pool), on the random-weight stand-in that
  tribev2's own config and FmriEncoder build at TRIBE v2's real shapes (brainrl/brain/tribe/standin.py:
  Llama-3.2-3B, w2v-bert-2.0, TRIBE's fusion model; built once in --tribe-workdir, shared with
  ``bench_tribe.py --backend``). The anchor scores each completion separately through the reconstructed
  reference path (scripts/bench_tribe.py: feature models rebuilt on every call, one Llama pass per word on
  its left context in batches of 4, per-clip CPU fbank + w2v-bert, fusion on one window), at the same
  shapes with other random weights. gTTS and WhisperX cannot run offline: espeak speaks instead of gTTS,
  WhisperX is not run, and the rebuild is a random init on the device (no disk read), so the anchor's
  measured reward is a lower bound of its real one. Only measured stages enter the totals; a separate,
  labelled line adds the anchor log's WhisperX median (15.4 s per call) for context.

Examples:
    python scripts/bench_train.py --device cpu --tiny                  # smoke test (seconds)
    BRAINRL_TRIBEV2_SRC=... python scripts/bench_train.py --device cpu --tiny --reward tribe --speech-workers 1
    python scripts/bench_train.py --device cpu --policy smollm2 --groups 4 --max-new-tokens 64 --steps 1
    python scripts/bench_train.py --device cuda --policy qwen2.5-0.5b --groups 4 8 --max-new-tokens 200 --steps 1
    python scripts/bench_train.py --device cuda --policy qwen2.5-3b --groups 4 8 --max-new-tokens 200 --steps 1
    python scripts/bench_train.py --device cuda --policy qwen2.5-0.5b --groups 8 --trainers awsft grpo --steps 2
The Qwen policies are random-weight models built from local configs with the real dimensions (no hub).
Their token ids decode through a local vocabulary of English word pieces (3 in 4 ids start a word, the
rest are suffixes and punctuation), so 200 tokens make about 150 spoken words, as English text does.
With --reward tribe it also needs TRIBE v2's environment (scripts/setup_tribe_tier.sh: tribev2's checkout in
$BRAINRL_TRIBEV2_SRC, neuralset, neuraltrain, exca, x_transformers, julius).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # bench_tribe's stand-in classes

ANCHOR_PROMPT = ("Tell a rich, detailed story about a moment when language revealed something surprising about "
                 "the nature of the mind.")
ANCHOR_SYSTEM = ("You are a highly articulate assistant. Respond with vivid, detailed, syntactically rich sentences. "
                 "Use concrete imagery and complex but clear language.")
#: Qwen2.5 generation_config defaults the anchor inherited; both loops sample with them
ANCHOR_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
#: median WhisperX time per call in the anchor's log (shared/docs/anchor-experiment.md); context only, never measured
ANCHOR_WHISPERX_MEDIAN_S = 15.4
REWARDS = ("synthetic", "tribe")

QWEN_SHAPES = {  # Qwen2.5-{0.5B,3B}-Instruct config.json dimensions
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                         max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                       max_position_embeddings=32768, rms_norm_eps=1e-6),
    # Qwen2.5's vocabulary and tokenizer path with a 2-layer body: a CPU smoke test of the Qwen code path
    "qwen2-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                       max_position_embeddings=4096, rms_norm_eps=1e-6),
}
#: pieces that continue the previous word (1 id in 4 decodes to one of these)
WORD_CONTINUATIONS = ("s", ",", "ed", ".", "ly", ";", "er")


def word_piece_tokenizer(vocab_size: int):
    """A tokenizer whose ``vocab_size`` ids decode to English word pieces, for random-weight policies.

    Id i decodes to a word from bench_tribe's VOCAB with a leading space when i % 4 != 3, else to a
    suffix or punctuation mark glued to the previous word; so a random policy's 200 tokens make ~150
    words, as English does with Qwen's tokenizer, and the stand-in's text tokenizer (trained on the same
    words) sees ~1.1 tokens per word. Vocabulary entries carry a ``#id`` tag so they stay distinct; the
    decoder drops it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from bench_tribe import VOCAB
    from brainrl.policy.tiny import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(len(specials), vocab_size):
        piece = WORD_CONTINUATIONS[(i // 4) % len(WORD_CONTINUATIONS)] if i % 4 == 3 else "\u2581" + VOCAB[i % len(VOCAB)]
        vocab[f"{piece}#{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.Sequence([decoders.Replace(Regex("#[0-9]+"), ""),
                                     decoders.Metaspace(replacement="\u2581", prepend_scheme="always")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", padding_side="left", chat_template=CHATML_TEMPLATE)


def build_policy(name: str, device: str, dtype):
    if name == "tiny":
        from brainrl.policy.tiny import tiny_policy

        model, tok = tiny_policy(seed=0, hidden=64, layers=2)
        return model.to(device=device, dtype=dtype), tok
    if name in QWEN_SHAPES:
        from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

        tok = word_piece_tokenizer(QWEN_SHAPES[name]["vocab_size"])
        config = Qwen2Config(**QWEN_SHAPES[name], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(dtype)
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return model, tok
    from brainrl.policy import load_policy

    return load_policy(name, "float32" if dtype == torch.float32 else "bfloat16", device)


# -- rewards ------------------------------------------------------------------------------------------
def synthetic_reward(brain_model: str):
    """The recipe's brain pipeline (every cache off) with the left-Broca mean: one object for both loops."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.rewards import ROIReward

    pipeline = BrainPipeline(PipelineConfig(model=brain_model, cache_dir="", memory_items=0))
    reward = ROIReward("broca", statistic="mean", name="broca_mean").use_pipeline(pipeline)
    reward(prompts=None, completions=["A warm-up sentence so model loading is not timed."])
    description = {"kind": "synthetic", "brain_model": pipeline.model.identity(), "speech": pipeline.speech.describe(),
                   "statistic": "left Broca mean over vertices and frames"}
    return reward, reward, description


def _add_seconds(target: dict[str, float], timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        if not stage.startswith("total") and not math.isnan(seconds):
            target[stage.split(" (")[0]] += seconds


def _make_reward_classes():
    from brainrl.rewards import ROIReward, completion_text
    from brainrl.rewards.base import Reward

    class BackendStageTimer(Reward):
        """brainrl's own reward, called unchanged: ``ROIReward`` on a ``BrainPipeline`` whose model is the
        shipped TRIBE backend (``model: tribe``). Only the clock is added: seconds in speech, in the engine's
        one-pass text features and batched audio features (its own counters), in the rest of TRIBE's
        predict (data loading, fusion, splitting) and in the rest of the reward (ROI statistic, plumbing)
        add up in ``stage_seconds`` (on the direct path the text and audio features overlap: their wall span
        adds up, and names in parentheses are each thread's own time, not added); ``reset_stages`` empties
        them before each measured step."""

        def __init__(self, reward, pipeline):
            super().__init__(reward.__name__)
            self.reward, self.pipeline = reward, pipeline
            self.engine = pipeline.model._engine  # in-process TribeEngine (worker=False)
            self.stage_seconds: dict[str, float] = defaultdict(float)
            self.calls = 0
            self._speech_s = self._predict_s = 0.0
            synthesize, predict = pipeline.speech.synthesize_safe, self.engine.predict

            def timed_synthesize(texts):
                t0 = time.perf_counter()
                try:
                    return synthesize(texts)
                finally:
                    self._speech_s += time.perf_counter() - t0

            def timed_predict(stimuli):
                t0 = time.perf_counter()
                try:
                    return predict(stimuli)  # numpy maps back: the device work is done when it returns
                finally:
                    self._predict_s += time.perf_counter() - t0

            pipeline.speech.synthesize_safe, self.engine.predict = timed_synthesize, timed_predict

        def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                     ) -> list[float | None]:
            engine = self.engine
            text0, audio0 = engine.text_stats.seconds, engine.audio_stats.seconds
            d = engine.direct_stats
            wall0 = d.seconds_overlapped
            self._speech_s = self._predict_s = 0.0
            t0 = time.perf_counter()
            values = self.reward(prompts=prompts, completions=completions, **columns)
            total = time.perf_counter() - t0
            self.last_failures = dict(self.reward.last_failures)
            text, audio = engine.text_stats.seconds - text0, engine.audio_stats.seconds - audio0
            if engine.config.predict_path == "direct":
                # the audio features run in a thread beside the events, text features and text windows: the wall
                # span of that section adds up with the others; each thread's own time is shown in parentheses
                # (overlapping, not added)
                wall = d.seconds_overlapped - wall0
                stages = {"features_wall": wall, "(text features alone)": text,  # wall: text || audio
                          "(audio features alone, other thread)": audio, "tribe_rest": self._predict_s - wall}
            else:
                stages = {"text_features": text, "audio_features": audio, "tribe_rest": self._predict_s - text - audio}
            _add_seconds(self.stage_seconds, {"speech": self._speech_s, **stages,
                                              "roi_and_plumbing": total - self._speech_s - self._predict_s})
            self.calls += 1
            return values

    class ReferenceBrocaReward(Reward):
        """The anchor's TRIBE calls, reconstructed: each completion on its own through bench_tribe's reference
        path (feature models rebuilt on every call, per-word Llama passes in batches of 4, CPU fbank +
        w2v-bert on the clip, fusion on one window), then the left-Broca mean. Seconds per stage add up in
        ``stage_seconds``. Empty texts and failed items score ``None`` with a logged reason."""

        def __init__(self, pipe, speech):
            super().__init__("broca_mean_anchor_reference")
            self.pipe, self.speech = pipe, speech
            self.roi = ROIReward("broca", statistic="mean")
            self.stage_seconds: dict[str, float] = defaultdict(float)
            self.calls = 0

        def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                     ) -> list[float | None]:
            self.last_failures = {}
            values: list[float | None] = []
            for i, completion in enumerate(completions):  # one call per completion, as the anchor did
                text = completion_text(completion).strip()
                values.append(None)
                if not text.split():
                    self._fail(i, "empty completion: nothing to speak")
                    continue
                try:
                    timings, brain_map = self.pipe.reference_predict(text, self.speech)
                except Exception as err:  # noqa: BLE001 - one bad text fails alone
                    self._fail(i, f"{type(err).__name__}: {err}")
                    continue
                self.calls += 1
                _add_seconds(self.stage_seconds, timings)
                value = float(self.roi.value(brain_map))
                if math.isnan(value):
                    self._fail(i, "reward is NaN")
                else:
                    values[i] = value
            return values

    return BackendStageTimer, ReferenceBrocaReward


def anchor_reference_reward(device: str, tiny: bool, dtype: str, speech_workers: int, seed: int):
    """The anchor's per-completion TRIBE path on bench_tribe's stand-in (TRIBE v2's shapes, random weights)."""
    from bench_tribe import Pipeline, Speech, build_byte_bpe_tokenizer, make_texts

    torch.manual_seed(seed)
    tokenizer = build_byte_bpe_tokenizer(make_texts(200, 100, seed), vocab_size=1000 if tiny else 4000)
    speech = Speech(speech_workers)
    if speech.engine is None:
        print(f"WARNING: {speech.name}; install espeakng-loader for real speech", file=sys.stderr)
    # feature_seed: every per-call rebuild draws the same weights (one model across the anchor's calls)
    options = argparse.Namespace(device=device, dtype=dtype, tiny=tiny, fbank="cpu", fbank_dtype="float64",
                                 audio_batch=1, feature_seed=seed)
    pipe = Pipeline(options, tokenizer)
    reward = _make_reward_classes()[1](pipe, speech)
    description = {
        "anchor_models": "bench_tribe.py's stand-ins of TRIBE v2's shapes: Llama-3.2-3B text model, w2v-bert-2.0, "
                         "fusion encoder" + (" [tiny configs]" if tiny else ""),
        "anchor_params": {"llama": sum(p.numel() for p in pipe.llama.parameters()),
                          "w2v_bert": sum(p.numel() for p in pipe.w2v.parameters()),
                          "fusion": sum(p.numel() for p in pipe.fusion.parameters())},
        "anchor_path": "one reference call per completion: feature models rebuilt (random init on the device, no "
                       "disk read), per-word Llama passes in batches of 4, CPU fbank + w2v-bert on the clip, fusion "
                       "on one window",
        "anchor_speech": speech.name,
        "anchor_text_tokenizer": f"byte BPE trained on bench_tribe texts, vocab {len(tokenizer)}",
    }
    return reward, description


def tribe_rewards(args):
    """brainrl's reward through the shipped TRIBE backend, and the anchor's reconstructed per-call path.

    brainrl: the product's ``ROIReward('broca', 'mean')`` on a ``BrainPipeline`` with ``model: tribe``
    (in-process ``TribeEngine``: TRIBE v2's own code from $BRAINRL_TRIBEV2_SRC with brainrl's one-pass text
    and batched audio features, resident models) on the random-weight stand-in that tribev2's own config and
    FmriEncoder build (brainrl/brain/tribe/standin.py; TRIBE v2's real shapes, or tiny with --tiny), espeak
    speech with ``--speech-workers`` processes, every cache off. Anchor: ``anchor_reference_reward``.
    The two have the same shapes but not the same random weights: the benchmark times them; the values
    are not compared."""
    from bench_tribe import enter_backend_standin, make_texts
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.rewards import ROIReward

    shape = "tiny" if args.tiny_standin else "real"
    work = Path(args.tribe_workdir or ROOT / "runs" / "bench" / f"tribe-standin-{shape}")
    checkpoint = enter_backend_standin(work, shape, make_texts(200, 100, args.seed), flag="--reward tribe")
    tribe = {"worker": False, "checkpoint_dir": str(checkpoint), "device": args.device, "dtype": args.tribe_dtype,
             "allow_bf16": args.tribe_dtype == "bfloat16", "cache_max_gb": 0, "cache_folder": str(work / "cache"),
             "audio_batch_size": args.audio_batch, "predict_path": args.tribe_predict_path}
    pipeline = BrainPipeline(PipelineConfig(speech="espeak", speech_kwargs={"workers": args.speech_workers},
                                            model="tribe", model_kwargs=tribe, cache_dir="", memory_items=0))
    product = ROIReward("broca", statistic="mean", name="broca_mean").use_pipeline(pipeline)
    brainrl_reward = _make_reward_classes()[0](product, pipeline)
    anchor_reward, anchor_info = anchor_reference_reward(args.device, args.tiny_standin, args.tribe_dtype,
                                                         args.speech_workers, args.seed)
    t0 = time.perf_counter()
    pipeline.model._engine.load()
    load_s = time.perf_counter() - t0
    warm = make_texts(2, 20, args.seed + 1)  # kernels, allocator, pool processes: not inside a timed step
    for reward in (brainrl_reward, anchor_reward):
        values = reward(completions=warm)
        if any(v is None for v in values):
            raise RuntimeError(f"warm-up of {reward.__name__} failed: {reward.last_failures}")
    reset_stages(brainrl_reward)
    reset_stages(anchor_reward)
    description = {
        "kind": "tribe",
        "brainrl_path": "the product's ROIReward on BrainPipeline(model: tribe): in-process TribeEngine ("
                        + ("TRIBE v2's own predict" if args.tribe_predict_path == "tribe" else
                           "predict_path 'direct': TRIBE's input tensors built without its events DataFrame, "
                           "TRIBE's fusion model")
                        + " with brainrl's one-pass text features and batched audio features, resident "
                        f"models), espeak speech pool ({args.speech_workers} workers), one call per step, every "
                        "cache off",
        "brainrl_models": "random-weight stand-in built by tribev2's own config and FmriEncoder "
                          f"(brainrl/brain/tribe/standin.py, {shape} shapes: Llama-3.2-3B, w2v-bert-2.0, TRIBE's "
                          "fusion model; a toy text tokenizer)",
        "brain_model": pipeline.model.identity(), "backend_load_s": load_s,
        "dtype": args.tribe_dtype, "speech": pipeline.speech.describe(),
        **anchor_info,
        "not_run": "gTTS (espeak speaks instead) and WhisperX: no network",
        "weights_note": "same shapes, different random weights in the two loops: the benchmark times them, the "
                        "reward values are not compared",
        "statistic": "left Broca mean over vertices and frames (brainrl ROIReward 'broca', 'mean')",
    }
    return brainrl_reward, anchor_reward, description


def stage_snapshot(reward) -> dict[str, float]:
    return dict(getattr(reward, "stage_seconds", {}))


def reset_stages(reward) -> None:
    if hasattr(reward, "stage_seconds"):
        reward.stage_seconds.clear()


# -- the two loops ------------------------------------------------------------------------------------
class AnchorLoop:
    """The anchor's step, reconstructed: sequential scoring, a deep-copied reference, full-vocab KL."""

    def __init__(self, base_model, tokenizer, reward, lora, lr: float, max_new_tokens: int, device):
        from brainrl.policy import attach_lora

        self.tokenizer = tokenizer
        self.reference = copy.deepcopy(base_model).eval().requires_grad_(False)  # the second full copy
        lora = copy.deepcopy(lora)
        lora.dropout = 0.05  # the anchor's LoRA dropout, active in its loss
        self.model = attach_lora(base_model, lora)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=lr,
                                           weight_decay=0.01)
        self.reward = reward
        self.max_new_tokens = max_new_tokens
        self.device = device

    def step(self, n: int, beta: float = 0.1) -> dict[str, float]:
        tok = self.tokenizer
        text = tok.apply_chat_template([{"role": "system", "content": ANCHOR_SYSTEM},
                                        {"role": "user", "content": ANCHOR_PROMPT}], tokenize=False,
                                       add_generation_prompt=True)
        enc = tok([text] * n, return_tensors="pt", add_special_tokens=False).to(self.device)
        t0 = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
                                      eos_token_id=tok.eos_token_id, **ANCHOR_SAMPLING)
        prompt_len = enc["input_ids"].shape[1]
        completions = []
        for row in out[:, prompt_len:]:
            ids = row.tolist()
            if tok.eos_token_id in ids:
                ids = ids[: ids.index(tok.eos_token_id)]
            completions.append(ids)
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in completions]
        _sync(self.device)
        t1 = time.perf_counter()
        rewards = [self.reward(prompts=[ANCHOR_PROMPT], completions=[t])[0] for t in texts]  # one at a time
        t2 = time.perf_counter()
        values = torch.tensor([float("nan") if r is None else r for r in rewards])
        advantages = (values - values.nanmean()) / values[~values.isnan()].std(unbiased=False).clamp(min=1e-8)
        self.model.train()  # LoRA dropout on, as in the anchor
        self.optimizer.zero_grad()
        total = 0.0
        prompt_ids = enc["input_ids"][0]
        for ids, adv in zip(completions, advantages.tolist()):
            if not ids or adv != adv:
                continue
            full = torch.cat([prompt_ids, torch.tensor(ids, device=self.device)]).unsqueeze(0)
            logits = self.model(input_ids=full).logits[0, prompt_len - 1:-1].float()
            with torch.no_grad():
                ref_logits = self.reference(input_ids=full).logits[0, prompt_len - 1:-1].float()
            target = torch.tensor(ids, device=self.device)
            ce = F.cross_entropy(logits, target)
            log_q = F.log_softmax(logits, -1)
            log_p = F.log_softmax(ref_logits, -1)
            kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
            total = total + adv * ce + beta * kl
        if torch.is_tensor(total):
            (total / n).backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 0.5)
        self.optimizer.step()
        _sync(self.device)
        t3 = time.perf_counter()
        return {"generation_s": t1 - t0, "reward_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0,
                "completion_tokens_mean": sum(map(len, completions)) / n,
                "completion_words_mean": sum(len(t.split()) for t in texts) / n,
                "rewards_failed": sum(r is None for r in rewards)}


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def anchor_sampling(max_new_tokens: int):
    """brainrl's SamplingConfig with the anchor's sampling settings (both brainrl trainers use it)."""
    from brainrl.policy.sampling import SamplingConfig

    return SamplingConfig(**ANCHOR_SAMPLING, max_new_tokens=max_new_tokens)


def decoding(name: str):
    """--generation: the product's default engine (auto), compiled decoding (static cache + torch.compile,
    with or without CUDA graphs) or a forced KV cache, eager (merged adapter in every case)."""
    from brainrl.policy.sampling import DecodingConfig

    return {"auto": DecodingConfig(), "compiled": DecodingConfig(compile=True),
            "compiled-nographs": DecodingConfig(compile=True, compile_mode="default"), "dynamic": DecodingConfig(cache="dynamic", compile=False),
            "static": DecodingConfig(cache="static", compile=False)}[name]


def brainrl_trainer(model, tokenizer, reward, lora, lr, max_new_tokens, n, workdir, generation: str = "auto"):
    """brainrl's AWSFTTrainer on the anchor's prompt, with the anchor's sampling settings."""
    from brainrl.rewards.loading import RewardConfig
    from brainrl.train.awsft import AWSFTTrainer
    from brainrl.train.config import AWSFTConfig, DataConfig, LoggingConfig, PolicyConfig, RecipeConfig

    sampling = anchor_sampling(max_new_tokens)
    recipe = RecipeConfig(
        name="bench", output_dir=str(Path(workdir) / f"brainrl-{n}"), rewards=[RewardConfig(path="bench")],
        policy=PolicyConfig(lora=lora, generation=decoding(generation)), data=DataConfig(system_prompt=ANCHOR_SYSTEM),
        awsft=AWSFTConfig(steps=1000, prompts_per_step=1, completions_per_prompt=n, learning_rate=lr, beta=0.1),
        sampling=sampling, logging=LoggingConfig(report_to=[], progress=False))
    return AWSFTTrainer(recipe, model=model, tokenizer=tokenizer, reward_funcs=[reward], train_prompts=[ANCHOR_PROMPT])


LOOP_KEYS = ("generation_s", "reward_s", "update_s", "step_s", "completion_tokens_mean", "completion_words_mean",
             "rewards_failed")
LOOPS = ("anchor", "brainrl", "brainrl_grpo")  # brainrl = the AWSFT trainer
TRAINERS = ("awsft", "grpo")


def _mean_rows(measured: list[dict[str, Any]], stages: list[dict[str, float]]) -> dict[str, Any]:
    row = {k: sum(float(m[k]) for m in measured) / len(measured) for k in LOOP_KEYS}
    names = sorted({name for s in stages for name in s})
    row["reward_stages_s"] = {name: sum(s.get(name, 0.0) for s in stages) / len(stages) for name in names}
    # decoding steps ~ completion length (a random-weight policy rarely stops early)
    row["generation_ms_per_token"] = 1000 * row["generation_s"] / max(row["completion_tokens_mean"], 1.0)
    return row


def run_brainrl(args, n, reward, lora, dtype, workdir) -> dict[str, Any]:
    _reset_peak(args.device)
    model, tok = build_policy(args.policy, args.device, dtype)
    trainer = brainrl_trainer(model, tok, reward, lora, 5e-5, args.max_new_tokens, n, workdir, args.generation)
    # warm-up (kernels, allocator, the static KV cache and the compiled decoder) at the run's own length, as
    # training runs it and as GRPO's first step does
    trainer.train_step(0)
    measured, stages = [], []
    for s in range(1, args.steps + 1):
        reset_stages(reward)
        measured.append(trainer.train_step(s))
        stages.append(stage_snapshot(reward))
    del trainer, model
    return _finish(args.device, _mean_rows(measured, stages))


def run_grpo(args, n, reward, lora, dtype, workdir) -> dict[str, Any]:
    """``args.steps`` measured GRPO steps (after one warm-up step) of brainrl's GRPO trainer."""
    from transformers import TrainerCallback

    from brainrl.rewards.loading import RewardConfig
    from brainrl.train.config import DataConfig, GRPORecipeConfig, LoggingConfig, PolicyConfig, RecipeConfig
    from brainrl.train.grpo import _trainer_class, grpo_config, prompt_dataset

    _reset_peak(args.device)
    model, tok = build_policy(args.policy, args.device, dtype)
    sampling = anchor_sampling(args.max_new_tokens)
    steps = args.steps + 1
    recipe = RecipeConfig(
        name="bench-grpo", output_dir=str(Path(workdir) / f"grpo-{n}"), trainer="grpo",
        rewards=[RewardConfig(path="bench")], policy=PolicyConfig(lora=lora, generation=decoding(args.generation)),
        data=DataConfig(system_prompt=ANCHOR_SYSTEM),
        grpo=GRPORecipeConfig(steps=steps, prompts_per_step=1, num_generations=n, learning_rate=5e-5, beta=0.1,
                              warmup_steps=0, checkpoint_every=10_000),
        sampling=sampling, logging=LoggingConfig(report_to=[], progress=False))
    seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    measured: list[dict[str, Any]] = []
    stages: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kwargs):
            _sync(args.device)
            reset_stages(reward)
            seconds[state.global_step]["start"] = time.perf_counter()

        def on_step_end(self, targs, state, control, **kwargs):
            _sync(args.device)
            step = state.global_step - 1
            t = seconds[step]
            total = time.perf_counter() - t["start"]
            if step >= 1:  # step 0 is the warm-up
                measured.append({"generation_s": t["generation_s"], "reward_s": t["reward_s"],
                                 "update_s": total - t["generation_s"] - t["reward_s"], "step_s": total,
                                 "completion_tokens_mean": t["tokens"] / max(t["completions"], 1),
                                 "completion_words_mean": t["words"] / max(t["completions"], 1),
                                 "rewards_failed": t["failed"]})
                stages.append(stage_snapshot(reward))

    trainer = _trainer_class()(
        model=model, reward_funcs=[reward], args=grpo_config(recipe, [1.0]),
        train_dataset=prompt_dataset([ANCHOR_PROMPT] * steps, ANCHOR_SYSTEM), processing_class=tok,
        peft_config=lora.peft_config(), callbacks=[StepTimer()], generation=recipe.policy.generation)
    generate, rewards = trainer._generate_single_turn, trainer._calculate_rewards

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        completion_ids, logprobs = generate(*a, **kw)
        _sync(args.device)
        t = seconds[trainer.state.global_step]
        t["generation_s"] += time.perf_counter() - t0
        t["tokens"] += sum(len(ids) for ids in completion_ids)
        t["completions"] += len(completion_ids)
        return completion_ids, logprobs

    def timed_rewards(inputs, prompts, completions, completion_ids_list):
        t0 = time.perf_counter()
        out = rewards(inputs, prompts, completions, completion_ids_list)
        t = seconds[trainer.state.global_step]
        t["reward_s"] += time.perf_counter() - t0
        t["words"] += sum(len(str(c if isinstance(c, str) else c[-1]["content"]).split()) for c in completions)
        t["failed"] += int(torch.isnan(out).any(dim=1).sum()) if torch.is_tensor(out) else 0
        return out

    trainer._generate_single_turn, trainer._calculate_rewards = timed_generate, timed_rewards
    trainer.train()
    del trainer, model
    return _finish(args.device, _mean_rows(measured, stages))


def run_anchor(args, n, reward, lora, dtype) -> dict[str, Any]:
    _reset_peak(args.device)
    model, tok = build_policy(args.policy, args.device, dtype)
    anchor = AnchorLoop(model, tok, reward, lora, 5e-5, args.max_new_tokens, args.device)
    anchor.max_new_tokens = min(args.warmup_tokens, args.max_new_tokens)
    anchor.step(n)  # warm-up, short completions
    anchor.max_new_tokens = args.max_new_tokens
    measured, stages = [], []
    for _ in range(args.steps):
        reset_stages(reward)
        measured.append(anchor.step(n))
        stages.append(stage_snapshot(reward))
    del anchor, model
    return _finish(args.device, _mean_rows(measured, stages))


def _reset_peak(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _finish(device, row: dict[str, Any]) -> dict[str, Any]:
    """Record the loop's peak GPU memory (reward models included), then free its models."""
    if str(device).startswith("cuda"):
        row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return row


# -- report -------------------------------------------------------------------------------------------
def print_report(args, results: list[dict[str, Any]], reward_info: dict[str, Any]) -> None:
    print(f"\nseconds per step: {args.policy} on {args.device}, {args.max_new_tokens} new tokens, decoding {args.generation}, reward "
          f"{reward_info['kind']} (mean of {args.steps} measured step(s) after a warm-up step: "
          f"{min(args.warmup_tokens, args.max_new_tokens)} tokens for the anchor, full length for brainrl)")
    if reward_info["kind"] == "tribe":
        print(f"  brainrl: {reward_info['brainrl_path']}; {reward_info['dtype']}")
        print(f"  anchor: {reward_info['anchor_path']}; {reward_info['dtype']}; not run: {reward_info['not_run']}")
    head = (f"{'G':>3} {'loop':<13} {'step s':>8} {'generation':>17} {'ms/token':>8} {'reward':>17} {'update':>17} "
            f"{'tokens':>7} {'words':>6}")
    print(head)
    print("-" * len(head))
    for row in results:
        loops = [loop for loop in LOOPS if loop in row]
        for loop in loops:
            m = row[loop]
            share = lambda k: f"{m[k]:7.2f} s ({100 * m[k] / m['step_s']:3.0f}%)"  # noqa: E731
            name = {"brainrl": "brainrl awsft", "brainrl_grpo": "brainrl grpo"}.get(loop, loop)
            print(f"{row['G']:>3} {name:<13} {m['step_s']:8.2f} {share('generation_s'):>17} "
                  f"{m['generation_ms_per_token']:8.1f} {share('reward_s'):>17} "
                  f"{share('update_s'):>17} {m['completion_tokens_mean']:7.0f} {m['completion_words_mean']:6.0f}")
        for key, name in (("speedup", "awsft"), ("speedup_grpo", "grpo")):
            if key in row:
                print(f"{'':>3} anchor/brainrl {name}: {row[key]:.2f}x per step (measured stages only)"
                      + (f"; goal >= 10x {'met' if row[key] >= 10 else 'not met'}" if args.device == "cuda" else ""))
        if "anchor_with_whisperx" in row:
            w = row["anchor_with_whisperx"]
            print(f"{'':>3} with the anchor's logged WhisperX median of {ANCHOR_WHISPERX_MEDIAN_S} s per call added "
                  f"(context, not measured): anchor {w['step_s']:.2f} s/step, " + ", ".join(
                      f"{w[k]:.2f}x vs {k[len('speedup_'):]}" for k in w if k.startswith("speedup_")))
        for loop in loops:
            stages = row[loop]["reward_stages_s"]
            peak = row[loop].get("peak_gpu_gib")
            if stages or peak is not None:
                print(f"{'':>3} {loop}: " + ("reward stages (s per step) " + ", ".join(
                    f"{k} {v:.2f}" for k, v in stages.items()) if stages else "")
                      + (f"; peak GPU memory {peak:.1f} GiB (reward models included)" if peak is not None else ""))
        if any(row[loop]["rewards_failed"] for loop in loops):
            print(f"{'':>3} rewards failed per step: " + ", ".join(
                f"{loop} {row[loop]['rewards_failed']:.0f}" for loop in loops) + " (see the log)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--policy", default="smollm2", help="smollm2 | qwen2.5-0.5b | qwen2.5-3b | qwen2-tiny | tiny | a folder")
    parser.add_argument("--tiny", action="store_true", help="tiny random policy (and tiny stand-in), few tokens: a smoke test")
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8], help="completions per step (G)")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS,
                        help="brainrl trainers timed next to the anchor loop (default: awsft grpo)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per loop and G (after one warm-up)")
    parser.add_argument("--warmup-tokens", type=int, default=32,
                        help="max_new_tokens of the anchor loop's untimed warm-up step (default 32); brainrl's "
                             "trainers warm up at --max-new-tokens")
    parser.add_argument("--generation", default="auto", choices=["auto", "compiled", "compiled-nographs", "dynamic", "static"],
                        help="brainrl's decoding engine (merged adapter in every case): auto = the product default "
                             "(compiled with a static cache on CUDA, dynamic cache and eager on a CPU), compiled = static KV cache + torch.compile with CUDA graphs (opt-in), "
                             "compiled-nographs = the same without CUDA graphs, dynamic = "
                             "dynamic cache, eager; static = static cache, eager")
    parser.add_argument("--reward", default=None, choices=REWARDS,
                        help="synthetic (default on cpu) or tribe (default on cuda: the shipped TRIBE backend on a "
                             "random-weight stand-in; needs $BRAINRL_TRIBEV2_SRC)")
    parser.add_argument("--brain-model", default="synthetic", help="brain model of --reward synthetic")
    parser.add_argument("--tiny-standin", action="store_true",
                        help="tiny shapes for the TRIBE stand-ins (implied by --tiny): a CPU smoke test")
    parser.add_argument("--tribe-workdir", default=None,
                        help="--reward tribe: folder of the backend's stand-in, built once and reused (default "
                             "runs/bench/tribe-standin-<shape>; scripts/bench_tribe.py --backend --workdir shares it)")
    parser.add_argument("--tribe-predict-path", default="tribe", choices=["tribe", "direct"],
                        help="--reward tribe: the backend's predict path (TribeConfig.predict_path): TRIBE v2's own "
                             "predict, or the same input tensors built without its events DataFrame")
    parser.add_argument("--tribe-dtype", default="float32", choices=["float32", "bfloat16"],
                        help="--reward tribe: dtype of both loops' TRIBE models (float32 = the backend's default; "
                             "bfloat16 = TribeConfig(allow_bf16=True), parity-checked by bench_tribe.py --backend)")
    parser.add_argument("--speech-workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="espeak processes of the stand-in's speech pool (default min(8, CPU count))")
    parser.add_argument("--audio-batch", type=int, default=16,
                        help="--reward tribe: clips per batched w2v-bert forward in the backend (audio_batch_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="JSON output (default: runs/bench/bench_<policy>_<device>_<reward>.json)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.tiny_standin = True
        args.policy = "tiny"
        args.max_new_tokens = min(args.max_new_tokens, 16)
        args.steps = min(args.steps, 1)
    if args.reward is None:
        args.reward = "tribe" if args.device == "cuda" else "synthetic"
    if args.out:
        args.out = str(Path(args.out).resolve())  # --reward tribe enters the stand-in's folder
    for name in ("steps", "warmup_tokens", "max_new_tokens", "speech_workers", "audio_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if any(g < 2 for g in args.groups):
        parser.error(f"--groups needs G >= 2 (advantages are normalised within a group), got {args.groups}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")

    from brainrl.policy import LoraConfig
    from brainrl.provenance import versions

    started = time.perf_counter()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    if args.reward == "synthetic":
        brainrl_reward, anchor_reward, reward_info = synthetic_reward(args.brain_model)
    else:
        brainrl_reward, anchor_reward, reward_info = tribe_rewards(args)
    lora = LoraConfig(r=32, alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    results = []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for n in args.groups:
                row: dict[str, Any] = {"G": n}
                if "awsft" in args.trainers:
                    row["brainrl"] = run_brainrl(args, n, brainrl_reward, lora, dtype, workdir)
                if "grpo" in args.trainers:
                    row["brainrl_grpo"] = run_grpo(args, n, brainrl_reward, lora, dtype, workdir)
                row["anchor"] = run_anchor(args, n, anchor_reward, lora, dtype)
                for key, loop in (("speedup", "brainrl"), ("speedup_grpo", "brainrl_grpo")):
                    if loop in row:
                        row[key] = row["anchor"]["step_s"] / row[loop]["step_s"]
                if args.reward == "tribe":
                    added = ANCHOR_WHISPERX_MEDIAN_S * n  # one WhisperX call per completion in the anchor
                    step = row["anchor"]["step_s"] + added
                    row["anchor_with_whisperx"] = {
                        "note": f"context only: the anchor log's WhisperX median ({ANCHOR_WHISPERX_MEDIAN_S} s per "
                                "call) times G, added to the measured anchor step; not measured here",
                        "added_s": added, "step_s": step,
                        **{f"speedup_{loop}": step / row[loop]["step_s"] for loop in ("brainrl", "brainrl_grpo")
                           if loop in row}}
                results.append(row)
    finally:
        for closable in (getattr(brainrl_reward, "pipeline", None), getattr(anchor_reward, "speech", None)):
            if closable is not None:
                closable.close()
    report = {
        "policy": args.policy, "device": args.device, "policy_dtype": str(dtype), "max_new_tokens": args.max_new_tokens,
        "generation": args.generation, "measured_steps": args.steps, "warmup_tokens": args.warmup_tokens, "seed": args.seed,
        "trainers": args.trainers, "load_average": list(os.getloadavg()),
        "sampling": {**ANCHOR_SAMPLING, "note": "the same settings in both loops"}, "prompt": ANCHOR_PROMPT,
        "reward": reward_info, "torch_threads": torch.get_num_threads(), "host": platform.node(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "versions": versions(), "wall_s": time.perf_counter() - started, "results": results,
    }
    out = Path(args.out or ROOT / "runs" / "bench" /
               f"bench_{args.policy.replace('/', '_')}_{args.device}_{args.reward}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print_report(args, results, reward_info)
    print(f"wall {report['wall_s']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
