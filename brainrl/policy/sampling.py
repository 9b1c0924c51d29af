"""Batched sampling with left padding, with every sampling setting explicit and recorded.

A model's own ``generation_config`` may carry sampling defaults (Qwen's top_p 0.8, top_k 20,
repetition_penalty 1.05 silently shaped the anchor's behaviour policy). ``neutralise_generation_config``
strips them, and every call passes the full set from ``SamplingConfig``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch

from brainrl.policy.logprobs import cache_argument, position_ids_from_mask
from brainrl.policy.lora import MergedWeights, merged_adapter

log = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """How completions are drawn. The defaults sample the policy itself (T=1, no truncation), so the
    behaviour policy equals the policy whose log-probabilities the loss uses."""

    temperature: float = 1.0
    #: anneal linearly from ``temperature`` to this over training (None: constant)
    temperature_end: float | None = None
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float | None = None
    repetition_penalty: float = 1.0
    max_new_tokens: int = 64
    do_sample: bool = True

    def __post_init__(self) -> None:
        if self.temperature <= 0 or (self.temperature_end is not None and self.temperature_end <= 0):
            raise ValueError("sampling.temperature (and temperature_end) must be > 0; use do_sample=false for greedy.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p must be in (0, 1]; got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"sampling.top_k must be >= 0 (0 = off); got {self.top_k}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"sampling.max_new_tokens must be >= 1; got {self.max_new_tokens}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"sampling.repetition_penalty must be > 0; got {self.repetition_penalty}.")

    def temperature_at(self, step: int, total_steps: int) -> float:
        """Linear temperature schedule (the anchor annealed 1.0 → 0.6); constant when no end is set."""
        if self.temperature_end is None or total_steps <= 1:
            return self.temperature
        frac = min(max(step / (total_steps - 1), 0.0), 1.0)
        return self.temperature + frac * (self.temperature_end - self.temperature)

    def generation_kwargs(self, temperature: float | None = None) -> dict[str, Any]:
        """Everything ``generate`` needs, explicitly (nothing left to the model's defaults)."""
        return {
            "do_sample": self.do_sample,
            "temperature": self.temperature if temperature is None else temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
        }


@dataclass
class DecodingConfig:
    """How completions are computed, not which distribution they come from: these settings change speed
    and float rounding only (tests/policy checks the sampled tokens' log-probabilities against the
    training forward's).

    - ``merge_adapter``: generate through merged LoRA weights W + s·BA (one matmul per layer instead of
      three); the update still runs on the unmerged adapter, whose weights are restored bit for bit.
    - ``cache``: the KV cache; ``static`` preallocates it for the whole completion (what compiled
      decoding needs); ``auto`` = static where decoding is compiled, else dynamic.
    - ``compile``: ``torch.compile`` the decoding step (transformers does it with a static cache); None =
      on CUDA, off elsewhere (compiling costs more than it saves on a CPU). The NaN gradients once seen
      after compiled decoding came from the static cache's padding columns, fixed in the training forward
      (``drop_common_left_padding``; docs/training.md has the H200 runs).
    - ``compile_mode``: torch.compile's mode for compiled decoding: ``reduce-overhead`` replays the
      decoding step as CUDA graphs; ``default`` compiles the kernels without graphs.
    - ``share_prompts``: with a dynamic cache, prefill each prompt once and repeat its KV cache for its
      completions (``generate`` would prefill every copy).
    """

    merge_adapter: bool = True
    cache: Literal["auto", "dynamic", "static"] = "auto"
    compile: bool | None = None
    compile_mode: Literal["reduce-overhead", "default", "max-autotune-no-cudagraphs"] = "reduce-overhead"
    share_prompts: bool = True

    def resolve(self, device: str | torch.device) -> dict[str, Any]:
        """(merge, cache, compile) for ``device``, with nothing left on auto."""
        compile_ = self.compile if self.compile is not None else torch.device(device).type == "cuda"
        cache = self.cache if self.cache != "auto" else ("static" if compile_ else "dynamic")
        if compile_ and cache != "static":
            raise ValueError("policy.generation.compile needs cache: static (or auto); transformers compiles "
                             "decoding only with a static KV cache.")
        return {"merge_adapter": self.merge_adapter, "cache": cache, "compile": compile_,
                "share_prompts": self.share_prompts and cache == "dynamic"}

    def generate_kwargs(self, device: str | torch.device) -> dict[str, Any]:
        """The extra ``generate`` arguments for the resolved cache and compile choice."""
        chosen = self.resolve(device)
        if chosen["cache"] == "dynamic":
            return {"disable_compile": True}
        from transformers import CompileConfig

        if not chosen["compile"]:
            return {"cache_implementation": "static", "disable_compile": True}
        config = CompileConfig(fullgraph=True, dynamic=False, mode=self.compile_mode)  # one shape
        config._compile_all_devices = torch.device(device).type != "cuda"  # elsewhere it must be asked for
        return {"cache_implementation": "static", "disable_compile": False, "compile_config": config}


def neutralise_generation_config(model, tokenizer) -> dict[str, Any]:
    """Replace the model's generation defaults by a config holding only special-token ids.

    Returns the sampling defaults that were dropped (recorded in run cards)."""
    from transformers import GenerationConfig

    base = getattr(model, "get_base_model", lambda: model)()
    old = base.generation_config.to_diff_dict() if base.generation_config is not None else {}
    dropped = {k: v for k, v in old.items() if k in {
        "do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens", "max_length",
        "typical_p", "no_repeat_ngram_size"}}
    eos = tokenizer.eos_token_id
    base.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    return dropped


def chat_prompt(tokenizer, user: str, system: str | None = None) -> str:
    """The prompt text the policy sees: the chat template with a generation prompt, or plain text for
    tokenizers without a template."""
    if getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    log.warning("tokenizer has no chat template; using plain 'system\\n\\nuser\\n' prompts")
    return (f"{system}\n\n" if system else "") + f"{user}\n"


@dataclass
class Samples:
    """A batch of completions: P prompts x N completions, grouped contiguously (row i = prompt i // N)."""

    prompt_ids: torch.Tensor  # (B, Lp), left padded
    prompt_mask: torch.Tensor  # (B, Lp)
    completion_ids: torch.Tensor  # (B, Lc), right padded
    completion_mask: torch.Tensor  # (B, Lc): 1 up to and including the first eos
    texts: list[str]  # decoded completions (special tokens dropped)
    prompts: list[str]  # the user prompt of each row
    group: torch.Tensor  # (B,) prompt index of each row
    finished: torch.Tensor  # (B,) bool: an eos was produced within max_new_tokens
    settings: dict[str, Any]
    #: (B, Lc) log π(token) of each sampled token from the generation path's own raw logits (temperature 1,
    #: before any truncation), when asked for with ``return_logprobs``; 0 past the mask
    generation_logprobs: torch.Tensor | None = None

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(dim=1)


def completion_mask(completion_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first eos, and whether each row has one."""
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= completion_ids == eos
    has_eos = is_eos.any(dim=1)
    length = completion_ids.shape[1]
    first = torch.where(has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, length, dtype=torch.long))
    positions = torch.arange(length, device=completion_ids.device).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).long(), has_eos


def eos_ids(tokenizer, model=None) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if model is not None:
        base = getattr(model, "get_base_model", lambda: model)()
        cfg_eos = getattr(base.config, "eos_token_id", None)
        for e in cfg_eos if isinstance(cfg_eos, (list, tuple)) else [cfg_eos]:
            if e is not None:
                ids.add(int(e))
    return sorted(ids)


@torch.no_grad()
def sample_completions(model, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, *, num_completions: int = 1,
                       system: str | None = None, seed: int | None = None, temperature: float | None = None,
                       device: str | torch.device | None = None, generation: DecodingConfig | None = None,
                       merged_weights: MergedWeights | None = None, return_logprobs: bool = False) -> Samples:
    """Sample ``num_completions`` completions for each user prompt in one batched ``generate`` call.

    ``seed`` reseeds torch first, so the same seed gives the same completions (base vs tuned comparisons
    and resumed runs rely on it). ``generation`` picks merged-adapter generation and the KV cache /
    compiled decoding (default: ``DecodingConfig()``); ``merged_weights`` keeps the merged buffers
    from one call to the next. ``return_logprobs`` keeps every step's logits (B × V floats per token) to
    fill ``generation_logprobs``: an on-policy check, not for every step of a large-vocabulary model."""
    device = device or next(model.parameters()).device
    texts_in = [chat_prompt(tokenizer, p, system) for p in prompts]
    tokenizer.padding_side = "left"
    generation = generation or DecodingConfig()
    engine = generation.generate_kwargs(device)
    # a static cache is sized by the prompt length: round it up so a compiled decoder sees few shapes
    multiple = 32 if engine.get("cache_implementation") == "static" else None
    enc = tokenizer(texts_in, return_tensors="pt", padding=True, add_special_tokens=False,
                    pad_to_multiple_of=multiple).to(device)
    if seed is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    kwargs = sampling.generation_kwargs(temperature)
    eos = eos_ids(tokenizer, model)
    was_training = model.training
    model.eval()
    try:
        with merged_adapter(model, merged_weights) if generation.merge_adapter else _unmerged() as merged:
            inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                      "num_return_sequences": num_completions}
            if (generation.share_prompts and num_completions > 1 and "cache_implementation" not in engine
                    and enc["input_ids"].shape[1] > 1):
                name, cache = shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], num_completions)
                inputs = {"input_ids": enc["input_ids"].repeat_interleave(num_completions, dim=0),
                          "attention_mask": enc["attention_mask"].repeat_interleave(num_completions, dim=0),
                          name: cache}
            out = model.generate(
                **inputs, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                **kwargs, **engine, output_logits=return_logprobs, return_dict_in_generate=True,
            )
    finally:
        model.train(was_training)
    prompt_len = enc["input_ids"].shape[1]
    completion_ids = out.sequences[:, prompt_len:]
    out_dtype, out_device = out.sequences.dtype, out.sequences.device
    if completion_ids.shape[1] == 0:  # generate stopped at once for every row
        completion_ids = torch.full((out.sequences.shape[0], 1), eos[0], dtype=out_dtype, device=out_device)
    mask, finished = completion_mask(completion_ids, eos)
    generation_logprobs = None
    if return_logprobs and out.logits:
        logits = torch.stack(out.logits, dim=1).float()  # (B, Lc, V), raw: before temperature and truncation
        chosen = torch.gather(torch.log_softmax(logits, dim=-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)
        generation_logprobs = chosen * mask
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True)
    prompt_ids = enc["input_ids"].repeat_interleave(num_completions, dim=0)
    prompt_mask = enc["attention_mask"].repeat_interleave(num_completions, dim=0)
    group = torch.arange(len(prompts), device=device).repeat_interleave(num_completions)
    settings = {**kwargs, "num_completions": num_completions, "seed": seed, "system_prompt": system, "eos_token_ids": eos,
                "engine": {**generation.resolve(device), "merged": merged}}
    return Samples(prompt_ids, prompt_mask, completion_ids, mask, [t.strip() for t in texts],
                   [prompts[i] for i in group.tolist()], group, finished, settings, generation_logprobs)


@contextlib.contextmanager
def _unmerged():
    yield False


def shared_prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int):
    """The KV cache of every prompt but its last token, computed once per prompt and repeated for its
    ``repeats`` completions (``generate`` expands the prompts first and would prefill each copy).
    ``generate`` then runs the last prompt token and samples; the logits equal a full prefill's up to float
    rounding (tests/policy/test_generation.py)."""
    from transformers import DynamicCache

    name = cache_argument(model)
    out = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                position_ids=position_ids_from_mask(attention_mask[:, :-1]), use_cache=True, logits_to_keep=1,
                **{name: DynamicCache()})
    cache = getattr(out, name)
    cache.batch_repeat_interleave(repeats)
    return name, cache
