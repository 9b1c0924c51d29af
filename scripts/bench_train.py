#!/usr/bin/env python
"""Seconds per training step, brainrl's AWSFT loop vs a reconstruction of the anchor experiment's loop.

Both loops run in the same process on the same policy weights, the same prompt and the same reward
model (the recipe's brain pipeline with every cache off, so each loop pays for every map):

- brainrl: one batched ``generate``; all rewards in one pipeline call; the reference = the same model
  with its LoRA adapter disabled; one batched forward/backward with the k3 KL (brainrl.train.awsft).
- anchor (reconstructed from its documented behaviour; see docs/training.md): one batched ``generate`` of
  n copies of the prompt with Qwen's inherited sampling defaults; rewards one completion at a time;
  a second deep-copied frozen reference model; per-completion forward passes of policy and reference
  with the full-vocabulary KL (``F.kl_div(..., log_target=True, reduction="batchmean")``); one backward.

Examples:
    python scripts/bench_train.py --device cpu --tiny                  # smoke test (seconds)
    python scripts/bench_train.py --device cpu --policy smollm2 --groups 4 --max-new-tokens 64
    python scripts/bench_train.py --device cuda --policy qwen2.5-0.5b --groups 4 8 --max-new-tokens 200
    python scripts/bench_train.py --device cuda --policy qwen2.5-3b --groups 4 8 --max-new-tokens 200
The Qwen policies are random-weight models built from local configs with the real dimensions (no hub);
their token ids decode through a local pseudo-word vocabulary so the speech engine has words to say.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANCHOR_PROMPT = ("Tell a rich, detailed story about a moment when language revealed something surprising about "
                 "the nature of the mind.")
ANCHOR_SYSTEM = ("You are a highly articulate assistant. Respond with vivid, detailed, syntactically rich sentences. "
                 "Use concrete imagery and complex but clear language.")
#: Qwen2.5 generation_config defaults the anchor inherited
ANCHOR_SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}

QWEN_SHAPES = {  # Qwen2.5-{0.5B,3B}-Instruct config.json dimensions
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                         max_position_embeddings=32768, rms_norm_eps=1e-6),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                       max_position_embeddings=32768, rms_norm_eps=1e-6),
}


def pseudo_word_tokenizer(vocab_size: int):
    """A word-level tokenizer with ``vocab_size`` speakable pseudo-words (consonant-vowel syllables)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from brainrl.policy.tiny import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    for n in (1, 2, 3, 4):
        for combo in itertools.product(syllables, repeat=n):
            words.append("".join(combo))
            if len(words) >= vocab_size - len(specials):
                break
        if len(words) >= vocab_size - len(specials):
            break
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>", padding_side="left", chat_template=CHATML_TEMPLATE)


def build_policy(name: str, device: str, dtype):
    if name == "tiny":
        from brainrl.policy.tiny import tiny_policy

        model, tok = tiny_policy(seed=0, hidden=64, layers=2)
        return model.to(device=device, dtype=dtype), tok
    if name in QWEN_SHAPES:
        from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

        tok = pseudo_word_tokenizer(QWEN_SHAPES[name]["vocab_size"])
        config = Qwen2Config(**QWEN_SHAPES[name], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             bos_token_id=tok.bos_token_id)
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(dtype)
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return model, tok
    from brainrl.policy import load_policy

    return load_policy(name, "float32" if dtype == torch.float32 else "bfloat16", device)


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
        (total / n).backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 0.5)
        self.optimizer.step()
        _sync(self.device)
        t3 = time.perf_counter()
        return {"generation_s": t1 - t0, "reward_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0,
                "completion_tokens_mean": sum(map(len, completions)) / n}


def _sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def brainrl_loop(model, tokenizer, reward, lora, lr, max_new_tokens, device, workdir):
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.rewards.loading import RewardSpec
    from brainrl.train.awsft import AWSFTTrainer
    from brainrl.train.config import AWSFTConfig, DataConfig, LoggingConfig, PolicyConfig, RecipeConfig

    def make(n: int) -> AWSFTTrainer:
        recipe = RecipeConfig(
            name="bench", output_dir=str(Path(workdir) / f"brainrl-{n}"), rewards=[RewardSpec(path="bench")],
            policy=PolicyConfig(lora=lora), data=DataConfig(system_prompt=ANCHOR_SYSTEM),
            awsft=AWSFTConfig(steps=1000, prompts_per_step=1, completions_per_prompt=n, learning_rate=lr, beta=0.1),
            sampling=SamplingConfig(max_new_tokens=max_new_tokens), logging=LoggingConfig(report_to=[], progress=False))
        return AWSFTTrainer(recipe, model=model, tokenizer=tokenizer, reward_funcs=[reward], train_prompts=[ANCHOR_PROMPT])

    return make


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--policy", default="smollm2", help="smollm2 | qwen2.5-0.5b | qwen2.5-3b | tiny | a folder")
    parser.add_argument("--tiny", action="store_true", help="tiny random policy, few tokens: a smoke test")
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8], help="completions per step (G)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per loop and G (after one warm-up)")
    parser.add_argument("--brain-model", default="synthetic")
    parser.add_argument("--out", default=None, help="JSON output (default: runs/bench/bench_<policy>_<device>.json)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.tiny:
        args.policy = "tiny"
        args.max_new_tokens = min(args.max_new_tokens, 16)
        args.steps = min(args.steps, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")

    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.policy import LoraSettings
    from brainrl.provenance import versions
    from brainrl.rewards import ROIReward

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    pipeline = BrainPipeline(PipelineConfig(model=args.brain_model, cache_dir="", memory_items=0))
    reward = ROIReward("broca", statistic="mean", name="broca_mean").use_pipeline(pipeline)
    reward(prompts=None, completions=["A warm-up sentence so model loading is not timed."])
    lora = LoraSettings(r=32, alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.groups:
            row = {"G": n}
            # brainrl loop
            model, tok = build_policy(args.policy, args.device, dtype)
            trainer = brainrl_loop(model, tok, reward, lora, 5e-5, args.max_new_tokens, args.device, workdir)(n)
            trainer.train_step(0)  # warm-up
            measured = [trainer.train_step(s) for s in range(1, args.steps + 1)]
            row["brainrl"] = {k: sum(m[k] for m in measured) / len(measured) for k in
                              ("generation_s", "reward_s", "update_s", "step_s", "completion_tokens_mean")}
            del trainer, model
            # anchor loop
            model, tok = build_policy(args.policy, args.device, dtype)
            anchor = AnchorLoop(model, tok, reward, lora, 5e-5, args.max_new_tokens, args.device)
            anchor.step(n)
            measured = [anchor.step(n) for _ in range(args.steps)]
            row["anchor"] = {k: sum(m[k] for m in measured) / len(measured) for k in measured[0]}
            del anchor, model
            if args.device == "cuda":
                torch.cuda.empty_cache()
            row["speedup"] = row["anchor"]["step_s"] / row["brainrl"]["step_s"]
            results.append(row)
    report = {
        "policy": args.policy, "device": args.device, "dtype": str(dtype), "max_new_tokens": args.max_new_tokens,
        "measured_steps": args.steps, "brain_model": pipeline.model.identity(), "speech": pipeline.speech.describe(),
        "torch_threads": torch.get_num_threads(), "host": platform.node(),
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "versions": versions(), "results": results,
    }
    out = Path(args.out or ROOT / "runs" / "bench" / f"bench_{args.policy.replace('/', '_')}_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"seconds per step: {args.policy} on {args.device}, {args.max_new_tokens} new tokens")
    for col in ("G", "loop", "step s", "generation", "reward", "update", "tokens", "anchor/brainrl"):
        table.add_column(col)
    for row in results:
        for loop in ("anchor", "brainrl"):
            m = row[loop]
            share = lambda k: f"{m[k]:.2f} s ({100 * m[k] / m['step_s']:.0f}%)"  # noqa: E731
            table.add_row(str(row["G"]), loop, f"{m['step_s']:.2f}", share("generation_s"), share("reward_s"),
                          share("update_s"), f"{m['completion_tokens_mean']:.0f}",
                          f"{row['speedup']:.2f}x" if loop == "brainrl" else "")
    Console(width=130).print(table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
