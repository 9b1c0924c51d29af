"""Fast generation stays on-policy: merged-adapter / static-cache sampling vs the training forward."""

import pytest
import torch

from brainrl.policy import LoraConfig, SamplingConfig, attach_lora, sample_completions
from brainrl.policy.lora import MergedWeights, merged_adapter, mergeable
from brainrl.policy.sampling import DecodingConfig
from brainrl.policy.tiny import tiny_policy
from brainrl.train.losses import completion_logits, token_logprobs

PROMPTS = ["tell a story about a river", "explain the weather at night"]
#: fp32: merged W + s·BA vs the adapter's separate branch, and a KV-cached decode vs one full forward,
#: differ by float rounding only (~1e-6 measured); bf16 would need ~1e-2
LOGPROB_ATOL = 1e-4


def trained_like_policy(seed=0):
    """A tiny policy with a LoRA adapter whose B is far from 0, so the adapter changes the policy a lot."""
    model, tokenizer = tiny_policy(seed=seed, hidden=64)
    model = attach_lora(model, LoraConfig(r=4, alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                           "up_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval(), tokenizer


def training_logprobs(model, samples):
    with torch.no_grad():
        logits = completion_logits(model, samples.prompt_ids, samples.prompt_mask, samples.completion_ids,
                                   samples.completion_mask)
    return token_logprobs(logits, samples.completion_ids) * samples.completion_mask


@pytest.mark.parametrize("generation", [DecodingConfig(merge_adapter=True, cache="dynamic"),
                                        DecodingConfig(merge_adapter=True, cache="static"),
                                        DecodingConfig(merge_adapter=False, cache="dynamic"),
                                        DecodingConfig(merge_adapter=True, share_prompts=False)],
                         ids=["merged-dynamic-shared-prompts", "merged-static", "unmerged-dynamic-shared-prompts",
                              "merged-dynamic"])
def test_sampled_tokens_logprobs_equal_training_forward(generation):
    model, tok = trained_like_policy()
    samples = sample_completions(model, tok, PROMPTS, SamplingConfig(max_new_tokens=16), num_completions=3, seed=5,
                                 generation=generation, return_logprobs=True)
    assert samples.settings["engine"]["merged"] is generation.merge_adapter
    train = training_logprobs(model, samples)  # the update's forward: unmerged adapter, no cache
    mask = samples.completion_mask.bool()
    assert mask.sum() > 20
    drift = (samples.generation_logprobs - train)[mask].abs().max().item()
    assert drift < LOGPROB_ATOL, f"generation path log-probs drift {drift:.2e} from the training forward"
    # the adapter matters: the same tokens under the base model score differently, so a generation path that
    # skipped or doubled the adapter could not pass the check above
    with model.disable_adapter():
        base = training_logprobs(model, samples)
    assert (base - train)[mask].abs().mean().item() > 0.05


def test_merged_generation_restores_weights_bit_for_bit_and_reuses_buffers():
    model, tok = trained_like_policy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = MergedWeights()
    for seed in (1, 2):
        samples = sample_completions(model, tok, PROMPTS, SamplingConfig(max_new_tokens=6), num_completions=2,
                                     seed=seed, merged_weights=buffers)
        assert samples.settings["engine"]["merged"] is True
        if seed == 1:
            addresses = {k: v.data_ptr() for k, v in buffers.buffers.items()}
    assert len(buffers.buffers) == 2 * 6  # two layers x six targeted projections
    assert {k: v.data_ptr() for k, v in buffers.buffers.items()} == addresses  # same buffers every step
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert not any(layer.disable_adapters for _, layer in model.named_modules() if hasattr(layer, "lora_A"))


def test_merged_unmerged_and_shared_prompt_sampling_draw_the_same_tokens():
    model, tok = trained_like_policy(seed=3)
    settings = [DecodingConfig(merge_adapter=False, share_prompts=False), DecodingConfig(merge_adapter=True),
                DecodingConfig(merge_adapter=True, share_prompts=False), DecodingConfig(merge_adapter=False)]
    runs = [sample_completions(model, tok, PROMPTS, SamplingConfig(max_new_tokens=12), num_completions=3, seed=9,
                               generation=g, return_logprobs=True) for g in settings]
    for run in runs[1:]:
        assert torch.equal(runs[0].completion_ids, run.completion_ids)
        assert (runs[0].generation_logprobs - run.generation_logprobs).abs().max() < LOGPROB_ATOL


def test_base_generation_under_disabled_adapter_is_not_merged():
    model, tok = trained_like_policy()
    with model.disable_adapter():
        assert mergeable(model) == (False, "the adapter is disabled (base-model generation)")
        samples = sample_completions(model, tok, PROMPTS, SamplingConfig(max_new_tokens=8), seed=4,
                                     return_logprobs=True)
        base = training_logprobs(model, samples)
    assert samples.settings["engine"]["merged"] is False
    mask = samples.completion_mask.bool()
    assert (samples.generation_logprobs - base)[mask].abs().max().item() < LOGPROB_ATOL


def test_unmergeable_models_generate_unmerged():
    plain, _ = tiny_policy(seed=0)
    assert mergeable(plain)[0] is False
    with merged_adapter(plain) as merged:
        assert merged is False
    model, _ = tiny_policy(seed=0)
    dora = attach_lora(model, LoraConfig(r=2))
    dora.base_model.model.model.layers[0].self_attn.q_proj.lora_variant["default"] = object()  # as DoRA sets it
    ok, why = mergeable(dora)
    assert not ok and "variant" in why


def test_generation_settings_resolve_per_device():
    assert DecodingConfig().resolve("cpu") == {"merge_adapter": True, "cache": "dynamic", "compile": False,
                                                   "share_prompts": True}
    # compiled decoding by default on CUDA (finite AWSFT updates on the H200 since the padding fix: docs/training.md)
    assert DecodingConfig().resolve("cuda:0") == {"merge_adapter": True, "cache": "static", "compile": True,
                                                      "share_prompts": False}
    assert DecodingConfig(compile=True).resolve("cuda:0") == {"merge_adapter": True, "cache": "static",
                                                                  "compile": True, "share_prompts": False}
    assert DecodingConfig(compile=False).resolve("cuda") == {"merge_adapter": True, "cache": "dynamic",
                                                                  "compile": False, "share_prompts": True}
    assert DecodingConfig().generate_kwargs("cpu") == {"disable_compile": True}
    kwargs = DecodingConfig(cache="static", compile=True).generate_kwargs("cpu")
    assert kwargs["cache_implementation"] == "static" and kwargs["compile_config"]._compile_all_devices
    assert kwargs["compile_config"].mode == "reduce-overhead"  # CUDA graphs unless asked otherwise
    assert DecodingConfig(compile=True, compile_mode="default").generate_kwargs("cuda")["compile_config"].mode == "default"
    with pytest.raises(ValueError, match="static"):
        DecodingConfig(cache="dynamic", compile=True).resolve("cuda")


@pytest.mark.gpu
def test_compiled_static_generation_on_cuda_stays_on_policy():
    """The compiled engine (opt-in: merged adapter, static cache, torch.compile'd decoding with CUDA graphs, reused
    merged buffers) samples tokens whose log-probs equal the update's forward; twice, so the second call
    replays the compiled decoder on buffers refilled with the same weights. fp32 on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model, tok = trained_like_policy()
    model = model.to("cuda")
    buffers = MergedWeights()
    for seed in (5, 6):
        samples = sample_completions(model, tok, PROMPTS, SamplingConfig(max_new_tokens=16), num_completions=3,
                                     seed=seed, device="cuda", generation=DecodingConfig(compile=True),
                                     merged_weights=buffers, return_logprobs=True)
        assert samples.settings["engine"] == {"merge_adapter": True, "cache": "static", "compile": True,
                                              "share_prompts": False, "merged": True}
        mask = samples.completion_mask.bool()
        drift = (samples.generation_logprobs - training_logprobs(model, samples))[mask].abs().max().item()
        assert drift < 1e-3, f"compiled generation drifts {drift:.2e} from the training forward"
