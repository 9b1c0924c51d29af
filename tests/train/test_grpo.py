import json

import pytest

from brainrl.policy.tiny import tiny_policy
from brainrl.rewards import completion_text
from brainrl.rewards.loading import RewardConfig
from brainrl.train.config import GRPORecipeConfig, LoggingConfig, RecipeConfig
from brainrl.policy.sampling import SamplingConfig
from brainrl.train.grpo import grpo_config, train_grpo
from brainrl.train.recipe import RecipeError
from brainrl.train.runs import read_jsonl

from helpers import PROMPTS


def vowel_share(prompts, completions, **columns):
    """Share of vowels in the completion text (chat messages or strings)."""
    texts = [completion_text(c) for c in completions]
    return [sum(ch in "aeiou" for ch in t) / max(len(t), 1) for t in texts]


def text_length(prompts, completions, **columns):
    return [float(len(completion_text(c))) for c in completions]


def recipe(tmp_path, **extra):
    return RecipeConfig(name="tiny-grpo", seed=1, output_dir=str(tmp_path / "run"), trainer="grpo",
                        rewards=[RewardConfig(path="unused.py")],
                        grpo=GRPORecipeConfig(steps=2, prompts_per_step=2, num_generations=2, learning_rate=1e-3,
                                          checkpoint_every=1, extra=extra),
                        sampling=SamplingConfig(max_new_tokens=6), logging=LoggingConfig(report_to=[], progress=False))


def test_config_maps_recipe_and_defaults_for_cpu(tmp_path):
    args = grpo_config(recipe(tmp_path), [1.0, 0.5])
    assert args.beta == 0.04 and args.num_generations == 2 and args.per_device_train_batch_size == 4
    assert args.use_cpu is True and args.bf16 is False
    assert args.max_completion_length == 6 and args.top_k == 0 and args.reward_weights == [1.0, 0.5]
    assert args.disable_dropout is True


def test_extra_fields_are_checked(tmp_path):
    with pytest.raises(RecipeError, match=r"grpo\.extra\.num_iteration.*Did you mean 'num_iterations'"):
        grpo_config(recipe(tmp_path, num_iteration=2), [1.0])
    with pytest.raises(RecipeError, match=r"grpo\.extra\.beta is set from the recipe"):
        grpo_config(recipe(tmp_path, beta=0.1), [1.0])
    assert grpo_config(recipe(tmp_path, num_iterations=2), [1.0]).num_iterations == 2


def test_temperature_schedule_rejected(tmp_path):
    r = recipe(tmp_path)
    r.sampling.temperature_end = 0.5
    with pytest.raises(RecipeError, match="temperature_end"):
        grpo_config(r, [1.0])


def test_loss_temperature_is_trls_temperature_and_sampling_moves_to_generation_kwargs(tmp_path):
    r = recipe(tmp_path)
    r.sampling.temperature = 0.8
    default = grpo_config(r, [1.0])
    assert default.temperature == pytest.approx(0.8) and not default.generation_kwargs  # TRL's own choice
    r.grpo.loss_temperature = 1.0
    args = grpo_config(r, [1.0])
    assert args.temperature == pytest.approx(1.0) and args.generation_kwargs == {"temperature": pytest.approx(0.8)}
    r.grpo.extra = {"generation_kwargs": {"temperature": 0.5}}
    with pytest.raises(RecipeError, match="conflicts with grpo.loss_temperature"):
        grpo_config(r, [1.0])
    with pytest.raises(ValueError, match="grpo.loss_temperature"):
        GRPORecipeConfig(loss_temperature=0.0)


def test_loss_temperature_one_samples_tempered_and_scores_untempered_log_probs(tmp_path):
    """With grpo.loss_temperature 1 TRL samples at sampling.temperature (its generation settings) and its loss
    log-probabilities are the untempered policy's (AWSFT's convention), not the tempered ones."""
    import torch

    from brainrl.train.grpo import _trainer_class, prompt_dataset
    from brainrl.train.losses import completion_logits, token_logprobs

    model, tok = tiny_policy(seed=0, hidden=64)
    r = recipe(tmp_path)
    r.sampling.temperature = 0.5
    r.grpo.loss_temperature = 1.0
    trainer = _trainer_class()(model=model, reward_funcs=[vowel_share], args=grpo_config(r, [1.0]),
                               train_dataset=prompt_dataset(PROMPTS, None), processing_class=tok,
                               peft_config=r.policy.lora.peft_config(), generation=r.policy.generation)
    assert trainer.generation_config.temperature == pytest.approx(0.5)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    enc = tok(PROMPTS[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    completion_ids = torch.randint(3, tok.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(completion_ids)
    ids = torch.cat([enc["input_ids"], completion_ids], 1)
    attention = torch.cat([enc["attention_mask"], mask], 1)
    with torch.no_grad():
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(policy, ids, attention, completion_ids.shape[1])
        logits = completion_logits(policy, enc["input_ids"], enc["attention_mask"], completion_ids, mask).float()
        untempered = token_logprobs(logits, completion_ids)
        tempered = token_logprobs(logits / 0.5, completion_ids)
    assert (trl_logps - untempered).abs().max().item() < 1e-4
    assert (tempered - untempered).abs().mean().item() > 0.05  # the check could tell the two apart


def test_grpo_trains_two_steps_with_two_rewards(tmp_path):
    model, tok = tiny_policy(seed=0)
    summary = train_grpo(recipe(tmp_path), model=model, tokenizer=tok, reward_funcs=[vowel_share, text_length],
                         reward_weights=[1.0, 0.01], train_prompts=PROMPTS)
    run = tmp_path / "run"
    assert summary["steps"] == 2
    logs = read_jsonl(run / "metrics.jsonl")
    keys = set().union(*[set(m) for m in logs])
    assert {"rewards/vowel_share/mean", "rewards/text_length/mean", "kl"} <= keys  # each reward logged separately
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] == "finished" and card["algorithm"]["name"] == "grpo"
    assert [r["weight"] for r in card["rewards"]] == [1.0, 0.01]


def test_grpo_generation_is_merged_and_on_policy(tmp_path):
    """TRL's generation in brainrl's GRPOTrainer runs on merged adapter weights; the sampled tokens' log-probs
    from generate's own logits equal the update's forward (unmerged adapter) within float rounding."""
    import torch

    from brainrl.train.grpo import _trainer_class, prompt_dataset
    from brainrl.train.losses import completion_logits, token_logprobs

    model, tok = tiny_policy(seed=0, hidden=64)
    r = recipe(tmp_path)
    calls = []
    plain_generate = model.generate

    def spy(*args, **kwargs):  # records what the generation path computed, as the sampler saw it
        out = plain_generate(*args, **{**kwargs, "output_logits": True, "return_dict_in_generate": True})
        layers = [m for m in model.modules() if hasattr(m, "lora_A")]
        calls.append({"adapter_branch_off": all(layer.disable_adapters for layer in layers), "out": out,
                      "attention_mask": kwargs["attention_mask"], "prompt_len": kwargs["input_ids"].shape[1]})
        return out.sequences

    model.generate = spy
    trainer = _trainer_class()(model=model, reward_funcs=[vowel_share], args=grpo_config(r, [1.0]),
                               train_dataset=prompt_dataset(PROMPTS, None), processing_class=tok,
                               peft_config=r.policy.lora.peft_config(), generation=r.policy.generation)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an adapter far from its zero init, so merging it matters
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    prompt_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS[:2]]
    completions, _ = trainer._generate_single_turn(prompt_ids, None, {}, 2)
    assert len(completions) == 2 and len(calls) == 1 and calls[0]["adapter_branch_off"]  # merged weights
    for name, param in policy.named_parameters():  # the exact weights are back for the update
        assert torch.equal(param, before[name]), name
    out, plen = calls[0]["out"], calls[0]["prompt_len"]
    completion_ids = out.sequences[:, plen:]
    gen = torch.gather(torch.log_softmax(torch.stack(out.logits, 1).float(), -1), 2,
                       completion_ids.unsqueeze(-1)).squeeze(-1)
    mask = torch.ones_like(completion_ids)
    prompt = out.sequences[:, :plen]
    with torch.no_grad():
        train = token_logprobs(completion_logits(policy, prompt, calls[0]["attention_mask"], completion_ids, mask),
                               completion_ids)
        with policy.disable_adapter():
            base = token_logprobs(completion_logits(policy, prompt, calls[0]["attention_mask"], completion_ids, mask),
                                  completion_ids)
    assert (gen - train).abs().max().item() < 1e-4
    assert (base - train).abs().mean().item() > 0.05  # the check has power: the adapter changes the policy


def test_grpo_logs_completions_starts_learning_at_step_one_and_writes_a_model_card(tmp_path, capsys):
    """completions.jsonl as AWSFT writes it; the first update has lr > 0 (transformers' warm-up starts at 0:
    one step with warmup 2 would leave the adapter's B = 0); no metrics dict printed per step; a real model card."""
    from safetensors.torch import load_file

    import warnings

    model, tok = tiny_policy(seed=0)
    r = recipe(tmp_path)
    r.grpo.steps, r.grpo.warmup_steps = 1, 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_grpo(r, model=model, tokenizer=tok, reward_funcs=[vowel_share, text_length],
                   reward_weights=[1.0, 0.01], train_prompts=PROMPTS)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    run = tmp_path / "run"
    rows = read_jsonl(run / "completions.jsonl")
    assert len(rows) == 4 and {row["step"] for row in rows} == {1}
    for row in rows:
        assert row["prompt"] in PROMPTS and set(row["rewards"]) == {"vowel_share", "text_length"}
        assert row["reward"] == pytest.approx(row["rewards"]["vowel_share"] + 0.01 * row["rewards"]["text_length"])
        assert row["rewards"]["text_length"] == float(len(row["completion"]))
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k), "first update had lr 0"
    printed = capsys.readouterr().out
    assert "'loss'" not in printed and "'reward'" not in printed and "'learning_rate'" not in printed
    card = (run / "adapter" / "README.md").read_text()
    assert "More Information Needed" not in card
    assert "vowel_share" in card and "grpo" in card and "brainrl evaluate --run" in card
