"""The evaluation core: scorers derived from rewards, paired sampling, one interval per column, and
`brainrl evaluate` / `brainrl compare` on a reward file whose ROI the recipe's eval section never names."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from brainrl.evaluation import (
    CallableScorer,
    LengthScorer,
    PairedSamples,
    ROIScorer,
    default_scorers,
    evaluate_samples,
    reward_rois,
)
from brainrl.rewards import ROIReward, WeightedSum

LEFT_STG = "left_stg=labels:G_temp_sup-Lateral@left"
PROMPTS = ["describe the river", "explain the storm", "tell a story about a poet", "write news about a city"]


def word_count(prompts, completions, **columns):
    return [float(len(c.split())) for c in completions]


def test_reward_rois_come_from_the_reward_objects():
    a = ROIReward(LEFT_STG, statistic="minus_global")
    b = ROIReward("broca", statistic="minus_reference", reference=["auditory"])

    class Custom:  # any callable can declare the regions it reads
        __name__ = "custom"
        rois = ["wernicke"]

        def __call__(self, prompts, completions, **columns):
            return [0.0] * len(completions)

    names = [r.name for r in reward_rois([WeightedSum([a, b]), Custom(), word_count])]
    assert names == ["left_stg", "broca", "auditory", "wernicke"]
    scorers = default_scorers([a, word_count], extra_rois=["broca"])
    assert [type(s).__name__ for s in scorers] == ["CallableScorer", "CallableScorer", "ROIScorer", "LengthScorer"]
    assert list(scorers[2].rois) == ["left_stg", "broca", "global"]


def _samples(texts_base, texts_tuned, index, prompts):
    n = len(index)
    return PairedSamples(prompts, np.asarray(index), {"base": texts_base, "tuned": texts_tuned},
                         {"base": np.ones(n), "tuned": np.ones(n)}, None, {"per_prompt": n // len(prompts)})


def test_judges_failures_and_prompt_columns():
    """A judge returns named statistics; a failing scorer leaves NaN with its reason, not 0; per-prompt
    columns (e.g. θ*) reach the scorers once per completion."""
    seen = {}

    def judge(prompts, completions, theta_target=None, **columns):
        seen["theta"] = theta_target
        return {"error": [abs(len(c) - t) for c, t in zip(completions, theta_target)],
                "hit": [None if i == 0 else 1.0 for i in range(len(completions))]}

    def broken(prompts, completions, **columns):
        raise RuntimeError("no judge server")

    samples = _samples(["a b", "c", "d e f", "g"], ["a b c", "d e", "f g h i", "j k"], [0, 0, 1, 1], ["p", "q"])
    result = evaluate_samples(samples, [CallableScorer(judge, "judge"), CallableScorer(broken, "judge"),
                                        LengthScorer(), CallableScorer(word_count)],
                              prompt_columns={"theta_target": [3, 5]})
    assert seen["theta"] == [3, 3, 5, 5]
    hit = result.summary("judge:hit")
    assert hit.failed == {"base": 1, "tuned": 1} and hit.n == {"base": 3, "tuned": 3}
    dead = result.summary("broken")
    assert dead.n == {"base": 0, "tuned": 0} and "no judge server" in dead.failure_reasons["base"][0]
    assert math.isnan(dead.diff.estimate)
    words = result.summary("word_count")
    assert words.diff.estimate == pytest.approx(1.0) and words.win_rate == 1.0
    assert words.diff.low <= 1.0 <= words.diff.high
    record = result.to_dict()
    json.dumps(record)  # JSON-safe (NaN written as null)
    assert {r["kind"] for r in record["scores"]} == {"judge", "length", "reward"}


def test_roi_scorer_matches_the_reward_on_the_same_maps():
    """The ROI column of a reward's region equals what the reward computes (same pipeline, same maps)."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

    pipeline = BrainPipeline(PipelineConfig(cache_dir=""))
    reward = ROIReward(LEFT_STG, statistic="minus_global").use_pipeline(pipeline)
    texts = ["The cat sat on the mat.", "Rain is expected tomorrow, so bring an umbrella.", ""]
    scored = ROIScorer(reward_rois([reward]), pipeline_object=pipeline).score(None, texts, {})
    expected = reward(None, texts)
    got = scored.values["roi:left_stg − global"]
    np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-4, atol=1e-6)
    assert expected[2] is None and np.isnan(got[2]) and scored.failures  # empty text: failed, with a reason


@pytest.fixture(scope="module")
def stg_run(tmp_path_factory):
    """A one-step AWSFT run on a tiny policy whose reward file targets left superior temporal gyrus; the
    recipe's eval section is left at its defaults."""
    from brainrl.brain.pipeline import PipelineConfig
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.policy.tiny import tiny_policy
    from brainrl.rewards.loading import RewardConfig
    from brainrl.train.awsft import AWSFTTrainer
    from brainrl.train.config import AWSFTConfig, DataConfig, LoggingConfig, PolicyConfig, RecipeConfig

    tmp = tmp_path_factory.mktemp("stg")
    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(tmp / "base")
    tokenizer.save_pretrained(tmp / "base")
    (tmp / "heldout.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp / "left_stg.py").write_text(f"from brainrl.rewards import ROIReward\n"
                                     f"reward = ROIReward({LEFT_STG!r}, statistic='minus_global')\n")
    recipe = RecipeConfig(
        name="stg", seed=3, output_dir=str(tmp / "run"),
        policy=PolicyConfig(model=str(tmp / "base"), dtype="float32"),
        data=DataConfig(train=str(tmp / "heldout.txt"), heldout=str(tmp / "heldout.txt")),
        rewards=[RewardConfig(path=str(tmp / "left_stg.py"))], brain=PipelineConfig(cache_dir=""),
        awsft=AWSFTConfig(steps=2, prompts_per_step=2, completions_per_prompt=2, learning_rate=0.05, warmup_steps=0,
                          checkpoint_every=2),
        sampling=SamplingConfig(max_new_tokens=8), logging=LoggingConfig(report_to=[], progress=False),
    )
    recipe.eval.min_completions = 8
    AWSFTTrainer(recipe, model=model, tokenizer=tokenizer).train()
    return Path(recipe.output_dir)


def test_evaluate_and_compare_score_the_trained_reward_and_its_region(stg_run, tmp_path, capsys):
    from brainrl.cli.main import main

    judge = tmp_path / "judge.py"
    judge.write_text("def reward(prompts, completions, **columns):\n"
                     "    return {'chars': [float(len(c)) for c in completions]}\n")
    assert main(["evaluate", "--run", str(stg_run), "--judge", str(judge)]) == 0
    record = json.loads((stg_run / "eval.json").read_text())
    scores = {r["name"]: r for r in record["scores"]}
    reward = scores["left_stg_minus_global"]
    assert reward["kind"] == "reward" and None not in reward["diff"]["ci"]
    assert {"roi:left_stg", "roi:left_stg − global", "roi:global"} <= set(scores)
    assert scores["reward:chars"]["kind"] == "judge"  # a judge file's named statistic, with its interval
    assert not any(name.startswith("roi:broca") for name in scores)  # the recipe default ROI is not imposed
    # the reward and its ROI column are the same number, computed two ways
    assert reward["tuned"]["estimate"] == pytest.approx(scores["roi:left_stg − global"]["tuned"]["estimate"],
                                                        rel=1e-4, abs=1e-6)
    assert "left_stg_minus_global" in capsys.readouterr().out
    pairs = [json.loads(line) for line in (stg_run / "eval_completions.jsonl").read_text().splitlines()]
    assert any(p["base"] != p["tuned"] for p in pairs)  # the adapter changed what is sampled

    out = tmp_path / "compare"
    assert main(["compare", "--run", str(stg_run), "--out", str(out), "--no-surfaces", "--n-boot", "200",
                 "--n-perm", "200", "--roi", "broca", "--roi", "global", "--judge", str(judge)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["headline"]["target"] == "left_stg" and "left_stg" in summary["roi_names"]
    compared = {r["name"]: r for r in summary["evaluation"]["scores"]}
    # same seeds, same sampling, same interval: compare's numbers are evaluate's numbers
    for name in ("left_stg_minus_global", "roi:left_stg", "reward:chars"):
        for part in ("base", "tuned", "diff"):
            assert compared[name][part]["estimate"] == pytest.approx(scores[name][part]["estimate"], rel=1e-4, abs=1e-6)
            assert compared[name][part]["ci"] == pytest.approx(scores[name][part]["ci"], rel=1e-4, abs=1e-6)
    roi_row = next(r for r in summary["statistics"]["rois"] if r["name"] == "left_stg")
    assert roi_row["diff"]["ci"] == pytest.approx(scores["roi:left_stg"]["diff"]["ci"], rel=1e-3, abs=1e-5)


def test_base_only_sampling_uses_the_paired_seeds():
    """A model without an adapter (e.g. validating a base generator) draws what the base draws in a pair."""
    import torch

    from brainrl.evaluation import sample_pair
    from brainrl.policy.lora import LoraConfig, attach_lora
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.policy.tiny import tiny_policy

    sampling = SamplingConfig(max_new_tokens=6)
    kwargs = dict(per_prompt=2, seed=5, batch_prompts=2, progress=False)
    plain, tok = tiny_policy(seed=0)
    alone = sample_pair(plain, tok, PROMPTS[:3], sampling, base_only=True, **kwargs)
    with pytest.raises(TypeError, match="base_only"):
        sample_pair(plain, tok, PROMPTS[:3], sampling, **kwargs)
    peft_model = attach_lora(tiny_policy(seed=0)[0], LoraConfig(r=2, alpha=4))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    pair = sample_pair(peft_model, tok, PROMPTS[:3], sampling, **kwargs)
    assert set(alone.texts) == {"base"} and alone.texts["base"] == pair.texts["base"]
    result = evaluate_samples(alone, [LengthScorer()])
    assert result.summary("words").n == {"base": 6, "tuned": 0} and math.isnan(result.summary("words").diff.estimate)
