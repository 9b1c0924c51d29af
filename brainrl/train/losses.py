"""Token log-probabilities, the k3 KL estimate and the AWSFT loss (logits and exact KL: brainrl.policy.logprobs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from brainrl.policy.logprobs import completion_logits, exact_kl, position_ids_from_mask  # noqa: F401 (re-exported)


def token_logprobs(logits: torch.Tensor, completion_ids: torch.Tensor) -> torch.Tensor:
    """log π(token) at each completion position, (B, Lc)."""
    return torch.gather(F.log_softmax(logits, dim=-1), 2, completion_ids.unsqueeze(-1)).squeeze(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π‖π_ref) on tokens sampled from π: exp(d) − d − 1 with d = ref − logp.
    Unbiased and ≥ 0; its gradient equals that of the exact KL in expectation (TRL uses the same)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1


@dataclass
class AWSFTLossTerms:
    loss: torch.Tensor  # scalar: Σ_i (A_i·CE_i + β·KL_i) / normaliser
    ce: torch.Tensor  # (B,) mean NLL per completion
    kl_seq_mean: torch.Tensor  # (B,) token-mean k3 KL per completion
    kl_tokens: torch.Tensor  # (B, Lc) per-token k3 KL (masked)


def awsft_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
               weight: torch.Tensor, beta: float, normaliser: float) -> AWSFTLossTerms:
    """Σ_i w_i·(A_i·CE_i + β·KL_i) / normaliser, with CE_i and KL_i token means over completion i.

    ``weight`` is 1 for completions in the loss and 0 for dropped ones (a None reward); with
    ``normaliser`` = number of kept completions over the whole step this is mean_i(A_i·CE_i + β·KL_i),
    also when the step is split into chunks whose gradients are accumulated."""
    mask = mask.to(logp.dtype)
    lengths = mask.sum(1).clamp(min=1)
    ce = -(logp * mask).sum(1) / lengths
    kl_tokens = k3_kl(logp, ref_logp) * mask
    kl = kl_tokens.sum(1) / lengths
    per_seq = advantages * ce + beta * kl
    loss = (weight * per_seq).sum() / normaliser
    return AWSFTLossTerms(loss, ce, kl, kl_tokens)


def group_advantages(rewards: torch.Tensor, group: torch.Tensor, std_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(r − mean_g)/max(std_g, floor) within each prompt's group, over the completions with a reward
    (NaN = no reward). Returns advantages (0 where no reward or a group has < 2 rewards) and, per row,
    whether its group had zero spread."""
    advantages = torch.zeros_like(rewards)
    flat = torch.zeros_like(rewards, dtype=torch.bool)
    for g in torch.unique(group):
        rows = (group == g) & ~torch.isnan(rewards)
        if rows.sum() < 2:
            continue
        values = rewards[rows]
        std = values.std(unbiased=True)
        advantages[rows] = (values - values.mean()) / torch.clamp(std, min=std_floor)
        flat[group == g] = bool(std < std_floor)
    return advantages, flat
