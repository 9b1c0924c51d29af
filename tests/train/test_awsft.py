import json

import torch
from safetensors.torch import load_file

from brainrl.policy.tiny import tiny_policy
from brainrl.train.awsft import AWSFTTrainer, score_rewards
from brainrl.train.runs import read_jsonl

from helpers import PROMPTS, letter_share_reward, tiny_recipe, token_count_reward


def make_trainer(recipe, resume=False):
    model, tok = tiny_policy(seed=0)
    return AWSFTTrainer(recipe, model=model, tokenizer=tok, reward_funcs=[token_count_reward, letter_share_reward],
                        reward_weights=[0.1, 1.0], train_prompts=PROMPTS, resume=resume)


def test_score_rewards_weighted_sum_and_none():
    total, per_fn = score_rewards([token_count_reward, letter_share_reward], [0.5, 1.0], ["p", "p"], ["ab", ""],
                                  [[1, 2], [3]])
    assert total[0].item() == 0.5 * 2 + 1.0
    assert torch.isnan(total[1])
    assert per_fn["letter_share_reward"] == [1.0, None]


def test_awsft_runs_logs_and_saves(tmp_path):
    recipe = tiny_recipe(tmp_path, steps=2)
    trainer = make_trainer(recipe)
    before = {k: v.clone() for k, v in trainer.policy.named_parameters() if v.requires_grad}
    summary = trainer.train()
    run = tmp_path / "run"
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    m = metrics[-1]
    for key in ("reward_mean", "reward_std", "kl_per_token", "kl_per_sequence", "loss", "grad_norm", "lr",
                "generation_s", "reward_s", "update_s", "rewards/token_count_reward/mean",
                "rewards/letter_share_reward/failed", "share_generation"):
        assert key in m, key
    assert m["kl_per_token"] > 0  # step 2 samples after one update: policy differs from base
    assert abs(m["share_generation"] + m["share_reward"] + m["share_update"] - 1) < 1e-6
    completions = read_jsonl(run / "completions.jsonl")
    assert len(completions) == 2 * 2 * 3 and {"prompt", "completion", "reward", "advantage"} <= set(completions[0])
    card = json.loads((run / "run_card.json").read_text())
    assert card["status"] == "finished" and card["seeds"]["seed"] == 3
    assert [r["name"] for r in card["rewards"]] == ["token_count_reward", "letter_share_reward"]
    assert card["sampling"]["max_new_tokens"] == 8 and card["versions"]["torch"]
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    model_card = (run / "adapter" / "README.md").read_text()  # brainrl's card, not PEFT's empty template
    assert "More Information Needed" not in model_card and "token_count_reward" in model_card and "awsft" in model_card
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert summary["steps"] == 2


def test_resume_matches_uninterrupted_run(tmp_path):
    full = tiny_recipe(tmp_path / "a", steps=4)
    make_trainer(full).train()
    part = tiny_recipe(tmp_path / "b", steps=4)
    make_trainer(part).train(stop_at=2)  # interrupted after step 2 (checkpoint-000002 was written)
    assert not (tmp_path / "b" / "run" / "adapter").exists()
    resumed = make_trainer(part, resume=True)
    assert resumed.start_step == 2
    resumed.train()
    a = load_file(str(tmp_path / "a" / "run" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    steps_b = [m["step"] for m in read_jsonl(tmp_path / "b" / "run" / "metrics.jsonl")]
    assert steps_b == [1, 2, 3, 4]


def test_refuses_to_overwrite_a_run(tmp_path):
    recipe = tiny_recipe(tmp_path, steps=1)
    make_trainer(recipe).train()
    import pytest

    with pytest.raises(ValueError, match="--resume"):
        make_trainer(recipe)


def test_awsft_generates_merged_and_checks_logprobs_on_policy(tmp_path):
    recipe = tiny_recipe(tmp_path, steps=3, logprob_check_every=2)
    trainer = make_trainer(recipe)
    trainer.train()
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    # steps 1 and 3 are check steps (step index 0 and 2); step 3 samples from an updated, non-zero adapter
    assert ["logprob_drift_max" in m for m in metrics] == [True, False, True]
    assert metrics[-1]["kl_per_token"] > 0
    for m in (metrics[0], metrics[2]):
        assert 0 <= m["logprob_drift_max"] < 1e-4  # fp32: merged generation vs unmerged update forward
    card = json.loads((tmp_path / "run" / "run_card.json").read_text())
    assert card["algorithm"]["generation"] == {"merge_adapter": True, "cache": "dynamic", "compile": False,
                                               "share_prompts": True}
    assert len(trainer.merged_weights.buffers) == 2 * 4  # q/k/v/o of both layers, merged into reused buffers


def test_update_with_non_finite_gradients_is_skipped_and_logged(tmp_path, caplog):
    recipe = tiny_recipe(tmp_path, steps=1)
    trainer = make_trainer(recipe)
    trainable = [p for p in trainer.policy.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    trainable[0].register_hook(lambda grad: grad * float("nan"))  # what the H200's compiled path produced
    with caplog.at_level("WARNING"):
        trainer.train()
    [metrics] = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert metrics["update_skipped"] == 1
    assert all(torch.equal(b, p.detach()) for b, p in zip(before, trainable))  # the adapter was left as it was
    assert any("update skipped" in r.getMessage() for r in caplog.records)
