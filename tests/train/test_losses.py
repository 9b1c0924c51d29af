import copy

import pytest
import torch
import torch.nn.functional as F

from brainrl.policy import LoraConfig, attach_lora, neutralise_generation_config, sample_completions, SamplingConfig
from brainrl.policy.tiny import tiny_policy
from brainrl.train.awsft import warmup_cosine
from brainrl.train.losses import awsft_loss, completion_logits, group_advantages, k3_kl, token_logprobs


def test_group_advantages_normalise_within_groups_and_skip_missing():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, float("nan"), 5.0, 7.0, float("nan"), float("nan")])
    group = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    adv, flat = group_advantages(rewards, group, std_floor=1e-3)
    assert torch.allclose(adv[:3], torch.tensor([-1.0, 0.0, 1.0]))
    assert adv[3] == 0 and adv[5] == 0 and adv[4] == 0  # equal rewards: floor keeps it finite, value 0
    assert bool(flat[3]) and not bool(flat[0])
    assert torch.all(adv[6:] == 0)  # a group with one reward has no baseline


def test_std_floor_bounds_advantages():
    rewards = torch.tensor([1.0, 1.0 + 1e-6])
    adv, _ = group_advantages(rewards, torch.tensor([0, 0]), std_floor=0.1)
    assert adv.abs().max() < 1e-4


def test_k3_is_nonnegative_and_zero_at_equality():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.all(k3_kl(logp, logp) == 0)
    assert torch.all(k3_kl(logp, logp - 0.3) > 0)


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s, 10, 2, 0.1) for s in range(10)]
    assert values[0] == 0.5 and values[1] == 1.0
    assert values[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[2:], values[3:]))
    assert values[-1] > 0.1 and warmup_cosine(10, 10, 2, 0.1) == pytest.approx(0.1)


def test_awsft_gradient_equals_independent_computation():
    """The trainer's loss path (disable_adapter reference, batched left-padded scoring, k3) gives the same
    gradient as A·CE + β·KL computed one sequence at a time against a deep-copied reference model."""
    torch.manual_seed(0)
    model, tok = tiny_policy(seed=1)
    neutralise_generation_config(model, tok)
    reference = copy.deepcopy(model).eval()
    policy = attach_lora(model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # move away from B = 0 so policy and reference differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    policy.eval()
    samples = sample_completions(policy, tok, ["tell a story", "explain the weather today"], SamplingConfig(max_new_tokens=6),
                                 num_completions=2, seed=5)
    advantages = torch.tensor([1.2, -0.7, 0.3, -0.8])
    keep = torch.tensor([1.0, 1.0, 0.0, 1.0])  # the third completion had no reward
    beta = 0.1
    args = (samples.prompt_ids, samples.prompt_mask, samples.completion_ids, samples.completion_mask)
    with torch.no_grad(), policy.disable_adapter():
        ref_logp = token_logprobs(completion_logits(policy, *args), args[2])
    logp = token_logprobs(completion_logits(policy, *args), args[2])
    terms = awsft_loss(logp, ref_logp, args[3], advantages, keep, beta, float(keep.sum()))
    params = [p for p in policy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(terms.loss, params)

    # independent: each completion alone, no padding, reference = a separate frozen copy
    total = 0.0
    for i in range(4):
        if keep[i] == 0:
            continue
        prompt = samples.prompt_ids[i][samples.prompt_mask[i].bool()]
        completion = samples.completion_ids[i][samples.completion_mask[i].bool()]
        ids = torch.cat([prompt, completion]).unsqueeze(0)
        logits = policy(input_ids=ids).logits[0, len(prompt) - 1:-1]
        with torch.no_grad():
            ref_logits = reference(input_ids=ids).logits[0, len(prompt) - 1:-1]
        ce = F.cross_entropy(logits, completion)
        lp = torch.log_softmax(logits, -1).gather(1, completion[:, None]).squeeze(1)
        rlp = torch.log_softmax(ref_logits, -1).gather(1, completion[:, None]).squeeze(1)
        kl = (torch.exp(rlp - lp) - (rlp - lp) - 1).mean()
        total = total + advantages[i] * ce + beta * kl
    expected = torch.autograd.grad(total / keep.sum(), params)
    biggest = max(float(g.abs().max()) for g in expected)
    assert biggest > 1e-4
    for got, want in zip(grads, expected):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4), float((got - want).abs().max())


def trained_looking_policy(seed: int):
    """A tiny LoRA policy whose adapter is non-zero (as after training), in eval mode."""
    model, tok = tiny_policy(seed=seed)
    neutralise_generation_config(model, tok)
    policy = attach_lora(model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    policy.eval()
    return policy, tok


def test_shared_prompt_scoring_equals_one_pass_scoring():
    """Groups of completions score their prompt once (KV cache indexed to each row): logits and gradients
    equal the one-pass forward up to float rounding, with left-padded prompts of different lengths and
    completions that stopped early (right padding)."""
    policy, tok = trained_looking_policy(seed=2)
    samples = sample_completions(policy, tok, ["tell a story", "explain the weather at night in the city"],
                                 SamplingConfig(max_new_tokens=10), num_completions=3, seed=2)
    args = (samples.prompt_ids, samples.prompt_mask, samples.completion_ids, samples.completion_mask)
    assert (samples.prompt_mask == 0).any()  # the shorter prompt is left padded
    samples.completion_mask[1, 4:] = 0  # as if row 1 had stopped after 5 tokens
    params = [p for p in policy.parameters() if p.requires_grad]
    outs = {}
    for share in (False, True):
        logits = completion_logits(policy, *args, share_prompts=share)
        mask = args[3].unsqueeze(-1)
        loss = (token_logprobs(logits, args[2]) * args[3]).sum()
        outs[share] = ((logits * mask).detach(), torch.autograd.grad(loss, params))
    assert torch.allclose(outs[True][0], outs[False][0], atol=1e-5)
    for got, want in zip(outs[True][1], outs[False][1]):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("share", [False, True])
def test_scoring_ignores_columns_that_are_padding_in_every_row(share):
    """A static KV cache pads prompts to a multiple of 32: the update drops the columns that are padding in
    every row (on the H200 those fully masked query rows gave NaN gradients in bf16), so logits and gradients
    equal those of the unpadded batch up to float rounding."""
    from brainrl.policy.logprobs import drop_common_left_padding

    policy, tok = trained_looking_policy(seed=3)
    samples = sample_completions(policy, tok, ["tell a story"], SamplingConfig(max_new_tokens=8), num_completions=3,
                                 seed=3)
    prompt_ids, prompt_mask = samples.prompt_ids, samples.prompt_mask
    pad = 7  # extra leading padding in every row, as pad_to_multiple_of adds it
    padded_ids = torch.cat([torch.full((prompt_ids.shape[0], pad), tok.pad_token_id), prompt_ids], dim=1)
    padded_mask = torch.cat([torch.zeros(prompt_mask.shape[0], pad, dtype=prompt_mask.dtype), prompt_mask], dim=1)
    trimmed_ids, trimmed_mask = drop_common_left_padding(padded_ids, padded_mask)
    assert torch.equal(trimmed_ids, prompt_ids[:, (prompt_mask.sum(0) > 0).long().argmax():])
    params = [p for p in policy.parameters() if p.requires_grad]
    outs = []
    for ids, mask in ((prompt_ids, prompt_mask), (padded_ids, padded_mask)):
        logits = completion_logits(policy, ids, mask, samples.completion_ids, samples.completion_mask, share_prompts=share)
        loss = (token_logprobs(logits, samples.completion_ids) * samples.completion_mask).sum()
        outs.append((logits.detach(), torch.autograd.grad(loss, params)))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    for got, want in zip(outs[1][1], outs[0][1]):
        assert torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-5, rtol=1e-4)
