"""The reward decodes what the posterior saw: campaign text format, pipeline identity, θ* sources
(dataset column from .jsonl prompt files through both trainers, prompt lookup, prompt parsing)."""

import dataclasses
import json

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.sbi.inference.decode import campaign_text
from brainrl.sbi.theta.prompts import build_theta_prompts, write_theta_prompts
from brainrl.sbi.theta.reward import PipelineMismatch, ThetaTargetReward, check_pipeline
from tests.helpers import CountingSpeech, LengthBrain
from tests.sbi.theta_fakes import KnownPosterior


@pytest.fixture
def pipeline(tmp_path):
    return BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path), model=LengthBrain())


def test_campaign_text_strips_numbering_and_closes_headlines():
    raw = "1. Storm hits the coast\n2) \"Council approves budget!\"\n\n- Markets calm today"
    assert campaign_text(raw) == "Storm hits the coast. Council approves budget! Markets calm today."
    assert campaign_text("  \n 3. \n") is None


def test_reward_speaks_the_campaign_format(pipeline):
    post = KnownPosterior()
    theta = [[0.5] * 6] * 2
    texts = ["1. Storm hits the coast\n2. Council approves budget", "  "]
    reward = ThetaTargetReward(post, ood="off", n_samples=16).use_pipeline(pipeline)
    values = reward(None, texts, theta_target=theta)
    assert values[1] is None and "no headline text" in reward.last_failures[1]
    expected = ThetaTargetReward(post, ood="off", n_samples=16, text_format="raw").use_pipeline(pipeline)(
        None, ["Storm hits the coast. Council approves budget."], theta_target=theta[:1])
    assert values[0] == pytest.approx(expected[0], rel=1e-6)


def test_pipeline_identity_mismatch_is_refused(pipeline):
    described = pipeline.describe()
    meta = {"campaigns": [{"pipeline": described}]}
    check_pipeline(meta, described)  # the same pipeline passes
    # a card written by older code records fewer fields (e.g. no speech caps): the shared ones decide
    older = {**described, "speech": {k: v for i, (k, v) in enumerate(described["speech"].items()) if i == 0}}
    check_pipeline({"campaigns": [{"pipeline": older}]}, described)
    other = {**described, "model": {**described["model"], "version": 99}}  # the same model, another version
    with pytest.raises(PipelineMismatch, match="trained on maps from"):
        check_pipeline(meta, other)
    post = KnownPosterior()
    post.meta = {**post.meta, "campaigns": [{"pipeline": other}]}
    reward = ThetaTargetReward(post, ood="off", n_samples=8).use_pipeline(pipeline)
    with pytest.raises(PipelineMismatch):
        reward(None, ["Storm hits the coast"], theta_target=[[0.5] * 6])


def test_theta_star_parsed_from_the_prompt_without_column_or_file(pipeline):
    rows = build_theta_prompts(3, seed=5)
    post = KnownPosterior()
    reward = ThetaTargetReward(post, ood="off", n_samples=8).use_pipeline(pipeline)
    targets = reward.targets([r["prompt"] for r in rows], 3, {})
    assert np.allclose(targets, [r["theta_target"] for r in rows], atol=1e-9)
    with pytest.raises(ValueError, match="state no θ"):
        reward.targets(["Write a poem."], 1, {})


def test_jsonl_prompt_columns_reach_rewards_in_both_trainers(tmp_path):
    from brainrl.train.awsft import score_rewards
    from brainrl.train.grpo import prompt_dataset
    from brainrl.train.recipe import read_prompt_rows

    rows = build_theta_prompts(4, seed=2)
    path = write_theta_prompts(rows, tmp_path / "p.jsonl")
    prompts, columns = read_prompt_rows(path)
    assert prompts == [r["prompt"] for r in rows] and columns[1]["theta_target"] == rows[1]["theta_target"]
    dataset = prompt_dataset(prompts, "sys", columns)
    assert dataset.column_names[:1] == ["prompt"] and dataset[2]["theta_target"] == pytest.approx(rows[2]["theta_target"])
    seen = {}

    def reward(prompts, completions, completion_ids, **cols):
        seen.update(cols)
        return [0.0] * len(completions)

    score_rewards([reward], [1.0], prompts[:2], ["a", "b"], [[1], [2]],
                  {"theta_target": [rows[0]["theta_target"], rows[1]["theta_target"]]})
    assert seen["theta_target"][1] == rows[1]["theta_target"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "no prompt"}) + "\n")
    with pytest.raises(ValueError, match="'prompt'"):
        read_prompt_rows(bad)


def test_headline_style_prompts_state_theta_exactly_and_ship_disjoint_files():
    from brainrl.sbi.simulation.prompts import describe_theta, style_headline_request
    from brainrl.sbi.theta.prompts import BIN_CENTRES, prompt_table, read_theta_prompts

    rows = build_theta_prompts(200, seed=3, style="headline")
    for row in rows:
        assert set(row["theta_target"]) <= set(BIN_CENTRES) and row["style"] == "headline"
        assert row["prompt"] == style_headline_request(row["theta_target"], row["topic"])
        assert describe_theta(row["theta_target"]) in row["prompt"]
    prompt_table(rows)  # the words identify θ* (level centres): equal prompts never carry different θ*
    block = build_theta_prompts(200, seed=3)  # same draws, snapped to the centre of their level
    assert np.allclose([r["theta_target"] for r in rows],
                       np.clip(np.floor(np.array([r["theta_target"] for r in block]) * 5), 0, 4) * 0.2 + 0.1)
    with pytest.raises(ValueError, match="style"):
        build_theta_prompts(2, style="chat")
    train = read_theta_prompts("recipes/data/theta_headline_train.jsonl")
    heldout = read_theta_prompts("recipes/data/theta_headline_heldout.jsonl")
    assert train == build_theta_prompts(256, 0, style="headline")
    assert heldout == build_theta_prompts(64, 1000, style="headline")  # = brainrl validate --prompt-style headline
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}


def check_recipe_rewards(recipe, pipeline):
    """Every reward of a θ recipe built as the recipe asks (its OOD setting legal) with a known posterior, run by
    the preflight check on the recipe's own prompts and θ* columns; the rewards, for further checks."""
    from brainrl.train.preflight import check_rewards, probe_prompts
    from brainrl.train.recipe import read_prompt_rows

    prompts, columns = read_prompt_rows(recipe.data.train)
    rewards = []
    for spec in recipe.rewards:
        kwargs = {k: v for k, v in spec.kwargs.items() if k != "posterior"}
        assert ThetaTargetReward(KnownPosterior(), **kwargs).ood == kwargs["ood"]  # settings are legal
        rewards.append(ThetaTargetReward(KnownPosterior(), **{**kwargs, "ood": "off"}, name=spec.name).use_pipeline(pipeline))
    check_rewards(rewards, [spec.weight for spec in recipe.rewards], probe_prompts(recipe, prompts),
                  ["Storm hits the coast.", "Markets rally after the vote."],
                  {"theta_target": [columns[0]["theta_target"], columns[1]["theta_target"]]})
    return rewards


def test_headline_recipes_load_with_their_system_prompt_and_score_their_prompts(pipeline):
    from brainrl.sbi.theta.prompts import system_prompt_for
    from brainrl.train import load_recipe
    from brainrl.train.preflight import check_rewards, probe_prompts
    from brainrl.train.recipe import read_prompt_rows

    for name, trainer in (("headline_awsft", "awsft"), ("headline_grpo", "grpo"), ("headline_indist_awsft", "awsft"),
                          ("headline_indist_grpo", "grpo"), ("headline_both_awsft", "awsft"),
                          ("headline_both_grpo", "grpo"), ("headline_both5_awsft", "awsft"),
                          ("headline_both5_grpo", "grpo")):
        recipe = load_recipe(f"recipes/offline_theta_{name}.yaml")
        assert recipe.trainer == trainer and recipe.data.system_prompt == system_prompt_for("headline")
        assert recipe.sampling.max_new_tokens <= 48 and not recipe.eval.enabled
        spec = recipe.rewards[0]
        assert spec.path == "rewards/theta_target.py"
        prompts, columns = read_prompt_rows(recipe.data.train)
        kwargs = {k: v for k, v in spec.kwargs.items() if k != "posterior"}
        assert ThetaTargetReward(KnownPosterior(), **kwargs).ood == kwargs.get("ood", "log")  # settings are legal
        reward = ThetaTargetReward(KnownPosterior(), **{**kwargs, "ood": "off"}).use_pipeline(pipeline)
        check_rewards([reward], [spec.weight], probe_prompts(recipe, prompts),
                      ["Storm hits the coast.", "Markets rally after the vote."],
                      {"theta_target": [columns[0]["theta_target"], columns[1]["theta_target"]]})


def test_fifth_attempt_recipes_sum_two_decoders_with_a_tighter_trust_region(pipeline):
    """recipes/offline_theta_headline_both5_*.yaml, both6_grpo.yaml and both7_grpo.yaml (docs/theta.md, "Fifth
    attempt", "Sixth attempt": the same recipe, 20 GRPO steps; "Seventh attempt": learning rate 2e-3, KL 0.05): the
    fourth attempt's Both
    reward plus 0.5 × the procedural valence/arousal/dominance reward, named apart, both scoring a batch through
    the trainers' reward check; KL 0.1; GRPO with 8 completions per group; no text-judge feature in the reward."""
    from brainrl.train import load_recipe
    from brainrl.train.preflight import check_rewards, probe_prompts
    from brainrl.train.recipe import read_prompt_rows

    for name, trainer, steps, beta, lr in (("both5_awsft", "awsft", 10, 0.1, None), ("both5_grpo", "grpo", 10, 0.1, 1e-3),
                                           ("both6_grpo", "grpo", 20, 0.1, 1e-3), ("both7_grpo", "grpo", 10, 0.05, 2e-3)):
        recipe = load_recipe(f"recipes/offline_theta_headline_{name}.yaml")
        both, procedural = recipe.rewards
        assert [r.path for r in recipe.rewards] == ["rewards/theta_target.py"] * 2
        assert (both.name, both.weight, procedural.name, procedural.weight) == \
            ("theta_both", 1.0, "theta_procedural", 0.5)
        assert both.kwargs["posterior"] == "runs/sbi_both_ood/posterior" and len(both.kwargs["dims"]) == 6
        assert (both.kwargs["mode"], both.kwargs["ood"]) == ("mean", "log")
        assert procedural.kwargs["posterior"] == "runs/sbi_procedural/posterior"
        assert procedural.kwargs["dims"] == ["valence", "arousal", "dominance"]
        assert (procedural.kwargs["mode"], procedural.kwargs["ood"]) == ("mean", "downweight")
        settings = recipe.awsft if trainer == "awsft" else recipe.grpo
        assert settings.steps == steps and settings.beta == pytest.approx(beta, abs=1e-12)
        if trainer == "grpo":  # the seventh attempt's GRPO: a larger per-step move (docs/theta.md, "Seventh attempt")
            assert (recipe.grpo.num_generations, recipe.grpo.prompts_per_step) == (8, 4)
            assert recipe.grpo.learning_rate == pytest.approx(lr, rel=1e-12)
        else:
            assert (recipe.awsft.completions_per_prompt, recipe.awsft.prompts_per_step) == (8, 4)
        rewards = check_recipe_rewards(recipe, pipeline)
        assert [r.__name__ for r in rewards] == ["theta_both", "theta_procedural"]  # logged apart


def test_eighth_attempt_recipes_weigh_the_procedural_term_0_3_and_grpo_steps_on_64_completions(pipeline):
    """recipes/offline_theta_headline_both8_{awsft,grpo}.yaml (docs/theta.md, "Eighth attempt"): the fifth attempt's
    recipes with the procedural term at 0.3 and, for GRPO, 8 prompts × 8 completions per optimiser step generated at
    once and fed as two micro-batches of 32 (TRL's generation batch is 64); everything else as the fifth attempt."""
    from brainrl.train import load_recipe
    from brainrl.train.grpo import grpo_config
    from brainrl.train.preflight import check_rewards, probe_prompts
    from brainrl.train.recipe import read_prompt_rows

    for trainer in ("awsft", "grpo"):
        fifth = load_recipe(f"recipes/offline_theta_headline_both5_{trainer}.yaml")
        recipe = load_recipe(f"recipes/offline_theta_headline_both8_{trainer}.yaml")
        assert recipe.trainer == trainer and recipe.output_dir.endswith(f"offline_theta_headline_both8_{trainer}")
        assert [(r.name, r.weight) for r in recipe.rewards] == [("theta_both", 1.0), ("theta_procedural", 0.3)]
        assert [r.kwargs for r in recipe.rewards] == [r.kwargs for r in fifth.rewards]  # same two decoders
        assert recipe.sampling == fifth.sampling and recipe.policy == fifth.policy and recipe.seed == fifth.seed
        if trainer == "awsft":
            assert recipe.awsft == fifth.awsft
        else:
            assert dataclasses.replace(recipe.grpo, extra={}) == fifth.grpo
            assert recipe.grpo.extra == {"gradient_accumulation_steps": 2}
            config = grpo_config(recipe, [r.weight for r in recipe.rewards], output_dir="unused")
            assert (config.per_device_train_batch_size, config.generation_batch_size) == (32, 64)
            assert config.generation_batch_size // config.num_generations == 8  # prompts per optimiser step
            assert config.reward_weights == pytest.approx([1.0, 0.3], abs=1e-12)
        check_recipe_rewards(recipe, pipeline)


def test_ninth_attempt_grpo_recipe_optimises_as_awsft_does(pipeline):
    """recipes/offline_theta_headline_both9_grpo.yaml (docs/theta.md, "Ninth attempt"): the eighth attempt's reward
    and sampling; log-probabilities of the loss at temperature 1 while TRL samples at 0.8, the learning rate from
    its peak by cosine down to AWSFT's 0.2 (with brainrl's one-step warm-up shift, AWSFT's multipliers step for
    step; the eighth attempt's cosine to 0 summed to 88% of them), 4 prompts × 8 completions a step."""
    import torch
    from transformers import get_scheduler

    from brainrl.train import load_recipe
    from brainrl.train.awsft import warmup_cosine
    from brainrl.train.grpo import _ShiftedWarmup, grpo_config
    from brainrl.train.preflight import check_rewards, probe_prompts
    from brainrl.train.recipe import read_prompt_rows

    eighth = load_recipe("recipes/offline_theta_headline_both8_grpo.yaml")
    awsft = load_recipe("recipes/offline_theta_headline_both8_awsft.yaml")
    recipe = load_recipe("recipes/offline_theta_headline_both9_grpo.yaml")
    assert recipe.trainer == "grpo" and recipe.output_dir.endswith("offline_theta_headline_both9_grpo")
    assert [(r.name, r.weight, r.kwargs) for r in recipe.rewards] == [(r.name, r.weight, r.kwargs) for r in eighth.rewards]
    assert recipe.sampling == eighth.sampling == awsft.sampling and recipe.policy == eighth.policy
    g, a = recipe.grpo, awsft.awsft
    assert (g.steps, g.prompts_per_step, g.num_generations) == (a.steps, a.prompts_per_step, a.completions_per_prompt)
    assert (g.learning_rate, g.beta, g.warmup_steps, g.max_grad_norm) == (a.learning_rate, a.beta, a.warmup_steps,
                                                                        a.max_grad_norm)
    config = grpo_config(recipe, [r.weight for r in recipe.rewards], output_dir="unused")
    assert config.temperature == pytest.approx(1.0)
    assert config.generation_kwargs == {"temperature": pytest.approx(recipe.sampling.temperature)}
    assert (config.per_device_train_batch_size, config.generation_batch_size) == (32, 32)
    def multipliers(config):  # transformers' schedule with the shift BrainrlGRPOTrainer.create_scheduler applies
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=config.warmup_steps,
                                  num_training_steps=config.max_steps,
                                  scheduler_specific_kwargs=config.lr_scheduler_kwargs or {})
        scheduler.lr_lambdas = [_ShiftedWarmup(f, config.warmup_steps) for f in scheduler.lr_lambdas]
        optimizer.param_groups[0]["lr"] = scheduler.lr_lambdas[0](0)
        out = []
        for _ in range(config.max_steps):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return np.array(out)

    reference = np.array([warmup_cosine(s, a.steps, a.warmup_steps, a.min_lr_ratio) for s in range(a.steps)])
    ninth = multipliers(config)
    assert ninth == pytest.approx(reference, abs=1e-9)
    before = multipliers(grpo_config(eighth, [1.0, 0.3], output_dir="unused"))
    assert before[0] == pytest.approx(1.0) and before[-1] < 0.05  # what the earlier GRPO recipes ran: cosine to 0
    assert before.sum() / reference.sum() == pytest.approx(0.88, abs=0.01)
    check_recipe_rewards(recipe, pipeline)


def test_tenth_attempt_recipes_change_only_the_both_posterior(pipeline):
    """recipes/offline_theta_headline_both10_{awsft,grpo}.yaml (docs/theta.md, "Tenth attempt"): the eighth attempt's
    AWSFT recipe and the ninth attempt's GRPO recipe, with the reward's Both posterior refitted on the 1,000-item
    SmolLM2 campaign; the procedural term, its weight, sampling, policy and optimisation are those recipes'."""
    from brainrl.train import load_recipe

    for trainer, before in (("awsft", "both8_awsft"), ("grpo", "both9_grpo")):
        earlier = load_recipe(f"recipes/offline_theta_headline_{before}.yaml")
        recipe = load_recipe(f"recipes/offline_theta_headline_both10_{trainer}.yaml")
        assert recipe.trainer == trainer and recipe.output_dir.endswith(f"offline_theta_headline_both10_{trainer}")
        assert [(r.name, r.weight) for r in recipe.rewards] == [(r.name, r.weight) for r in earlier.rewards]
        both, procedural = recipe.rewards
        assert both.kwargs["posterior"] == "runs/sbi_both10/posterior" != earlier.rewards[0].kwargs["posterior"]
        assert {k: v for k, v in both.kwargs.items() if k != "posterior"} == \
            {k: v for k, v in earlier.rewards[0].kwargs.items() if k != "posterior"}
        assert procedural.kwargs == earlier.rewards[1].kwargs
        assert (recipe.sampling, recipe.policy, recipe.seed, recipe.data) == \
            (earlier.sampling, earlier.policy, earlier.seed, earlier.data)
        assert getattr(recipe, trainer) == getattr(earlier, trainer)
        check_recipe_rewards(recipe, pipeline)
