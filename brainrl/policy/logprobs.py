"""Scoring sampled completions under a policy: logits per completion token, exact KL between two policies."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` uses them, so scoring sees what sampling saw."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def completion_logits(model, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """Logits (B, Lc, V) that predict each completion token (only the last Lc+1 positions are computed)."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    length = completion_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), logits_to_keep=length + 1, use_cache=False)
    return out.logits[:, -length - 1:-1, :].float()


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
