"""Batched sampling with left padding, with every sampling setting explicit and recorded.

A model's own ``generation_config`` may carry sampling defaults (Qwen's top_p 0.8, top_k 20,
repetition_penalty 1.05 silently shaped the anchor's behaviour policy). ``neutralise_generation_config``
strips them, and every call passes the full set from ``SamplingConfig``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

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
                       device: str | torch.device | None = None) -> Samples:
    """Sample ``num_completions`` completions for each user prompt in one batched ``generate`` call.

    ``seed`` reseeds torch first, so the same seed gives the same completions (base vs tuned comparisons
    and resumed runs rely on it)."""
    device = device or next(model.parameters()).device
    texts_in = [chat_prompt(tokenizer, p, system) for p in prompts]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts_in, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    if seed is not None:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    kwargs = sampling.generation_kwargs(temperature)
    eos = eos_ids(tokenizer, model)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], num_return_sequences=num_completions,
            eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, **kwargs,
        )
    finally:
        model.train(was_training)
    prompt_len = enc["input_ids"].shape[1]
    completion_ids = out[:, prompt_len:]
    if completion_ids.shape[1] == 0:  # generate stopped at once for every row
        completion_ids = torch.full((out.shape[0], 1), eos[0], dtype=out.dtype, device=out.device)
    mask, finished = completion_mask(completion_ids, eos)
    completion_ids = completion_ids.masked_fill(mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(completion_ids * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True)
    prompt_ids = enc["input_ids"].repeat_interleave(num_completions, dim=0)
    prompt_mask = enc["attention_mask"].repeat_interleave(num_completions, dim=0)
    group = torch.arange(len(prompts), device=device).repeat_interleave(num_completions)
    settings = {**kwargs, "num_completions": num_completions, "seed": seed, "system_prompt": system, "eos_token_ids": eos}
    return Samples(prompt_ids, prompt_mask, completion_ids, mask, [t.strip() for t in texts],
                   [prompts[i] for i in group.tolist()], group, finished, settings)


def sampling_record(sampling: SamplingConfig) -> dict[str, Any]:
    return asdict(sampling)
