"""Scoring sampled completions under a policy: logits per completion token, exact KL between two policies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` uses them, so scoring sees what sampling saw."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def cache_argument(model) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (earlier): the KV cache's keyword in the
    model's forward (looked up through DDP/PEFT wrappers)."""
    import inspect

    base = getattr(model, "module", model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def drop_common_left_padding(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` and ``mask`` without their leading columns that are padding in every row."""
    if mask.shape[1] == 0:
        return ids, mask
    pad = int((mask.sum(0) == 0).long().cumprod(0).sum())
    return (ids[:, pad:], mask[:, pad:]) if pad else (ids, mask)


def completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask, *,
                      share_prompts: bool = True) -> torch.Tensor:
    """Logits (B, Lc, V) that predict each completion token (only the last Lc+1 positions are computed).

    With ``share_prompts`` (default), rows with the same prompt (a group of completions) run the prompt
    through the model once: its KV cache is computed for the distinct prompts and indexed out to every
    row, then the completions run on top of it. Same function, same gradient (indexing is differentiable,
    so each prompt's gradient sums over its group); it saves (N-1)/N of the prompt's forward and backward
    for groups of N, and equals the one-pass result up to float rounding (tests/train/test_losses.py).

    Leading columns that are padding in every row (a static KV cache pads prompts to a multiple of 32) are
    dropped first: positions come from the mask, so nothing changes but the work, and no query row is left
    with nothing to attend to (on the H200 such rows gave NaN gradients in bf16, while the forward stayed
    finite)."""
    prompt_ids, prompt_mask = drop_common_left_padding(prompt_ids, prompt_mask)
    length = completion_ids.shape[1]
    if share_prompts and length > 1 and prompt_ids.shape[1] > 0:
        distinct, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], dim=1), dim=0, return_inverse=True)
        if distinct.shape[0] < prompt_ids.shape[0]:
            width = prompt_ids.shape[1]
            return _shared_prompt_logits(model, distinct[:, :width], distinct[:, width:], inverse, prompt_mask,
                                         completion_ids, completion_mask)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), logits_to_keep=length + 1, use_cache=False)
    return out.logits[:, -length - 1:-1, :].float()


def _shared_prompt_logits(model, prompts, prompts_mask, inverse, prompt_mask, completion_ids, completion_mask):
    """``completion_logits`` with one prompt pass per distinct prompt (see there)."""
    from transformers import DynamicCache

    name = cache_argument(model)
    head = model(input_ids=prompts, attention_mask=prompts_mask, position_ids=position_ids_from_mask(prompts_mask),
                 use_cache=True, logits_to_keep=1, **{name: DynamicCache()})
    cache = getattr(head, name)
    cache.reorder_cache(inverse)  # index_select per layer: every row gets its prompt's keys and values
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    positions = position_ids_from_mask(attention_mask)[:, prompt_mask.shape[1]:]
    body = model(input_ids=completion_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                 position_ids=positions[:, :-1], use_cache=True, **{name: cache})
    return torch.cat([head.logits[:, -1:, :][inverse], body.logits], dim=1).float()


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary KL(π‖π_ref) at each position, (B, Lc) (used by evaluation and the anchor bench)."""
    logq = F.log_softmax(logits, dim=-1)
    logp_ref = F.log_softmax(ref_logits, dim=-1)
    return (logq.exp() * (logq - logp_ref)).sum(-1)


@torch.no_grad()
def kl_to_base(model, samples, chunk: int = 8) -> tuple[float, float]:
    """Exact KL(tuned‖base) summed over the completion tokens of ``samples`` (drawn from the tuned model),
    and the number of tokens; the base is the same PEFT model with its adapter disabled."""
    total, tokens = 0.0, 0.0
    for start in range(0, samples.completion_ids.shape[0], chunk):
        rows = slice(start, start + chunk)
        args = (samples.prompt_ids[rows], samples.prompt_mask[rows], samples.completion_ids[rows],
                samples.completion_mask[rows])
        tuned = completion_logits(model, *args)
        with model.disable_adapter():
            base = completion_logits(model, *args)
        mask = args[3].float()
        total += float((exact_kl(tuned, base) * mask).sum())
        tokens += float(mask.sum())
    return total, tokens
