"""`brainrl compare` on a finished run folder: a tiny local policy + a real LoRA adapter, the real
espeak + synthetic brain pipeline, and the real report writer."""

import json

import pytest

from brainrl.cli.compare import register, resolve_settings
from brainrl.cli.main import build_parser, main
from report_helpers import PROMPTS, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("cli"))


def parse(*argv):
    return build_parser().parse_args(["compare", *argv])


def test_settings_come_from_the_run_card(run_dir):
    settings = resolve_settings(parse("--run", str(run_dir)))
    assert settings.prompts == PROMPTS  # held-out file, comment skipped, found beside the recipe
    assert settings.base.endswith("base_model") and settings.adapter == str(run_dir / "adapter")
    assert settings.seed == 7 and settings.system_prompt == "Be brief."
    assert settings.sampling["max_new_tokens"] == 12 and settings.sampling["temperature_end"] is None
    assert any("starting temperature" in note for note in settings.notes)
    assert settings.pipeline["model"] == "synthetic" and settings.completions_per_model == 32  # the eval rule
    assert settings.per_prompt == 8 and settings.batch_prompts == 8 and settings.dtype == "float32"
    assert settings.rewards[0]["path"].endswith("rewards/broca.py") and settings.target is None


def test_flags_override_the_run_card(run_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one prompt\nanother prompt\n")
    settings = resolve_settings(parse("--run", str(run_dir), "--prompts", str(prompts), "--seed", "3",
                                      "--temperature", "0.7", "--target", "wernicke", "--model-arg", "seed=5",
                                      "--system", ""))
    assert settings.prompts == ["one prompt", "another prompt"] and settings.seed == 3
    assert settings.sampling["temperature"] == 0.7 and settings.target == "wernicke"
    assert settings.per_prompt == 16  # the run's eval rule: at least 32 completions per model
    assert settings.pipeline["model_kwargs"] == {"seed": 5} and settings.system_prompt is None


def test_missing_pieces_fail_naming_the_flag(run_dir, tmp_path):
    with pytest.raises(ValueError, match="--run RUN_DIR"):
        resolve_settings(parse())
    with pytest.raises(FileNotFoundError, match="run_card.json"):
        resolve_settings(parse("--run", str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="adapter"):
        resolve_settings(parse("--adapter", str(tmp_path), "--base", "x", "--prompts", "p.txt"))
    with pytest.raises(ValueError, match="--prompts FILE"):
        resolve_settings(parse("--adapter", str(run_dir / "adapter"), "--base", "smollm2"))
    with pytest.raises(ValueError, match="temperature"):
        resolve_settings(parse("--run", str(run_dir), "--temperature", "0"))


def test_n_sets_completions_per_prompt(run_dir):
    settings = resolve_settings(parse("--run", str(run_dir), "-n", "10"))
    assert settings.per_prompt == 3 and settings.completions_per_model == 12  # ceil(10 / 4 prompts) each


def test_compare_writes_report_end_to_end(run_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["compare", "--run", str(run_dir), "-n", "8", "--out", str(out), "--no-surfaces",
                 "--n-boot", "200", "--n-perm", "200", "--cache-dir", ""])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completions"]["base"]["used"] + summary["completions"]["base"]["failed"] == 8
    scores = {row["name"]: row for row in summary["evaluation"]["scores"]}  # the same core as `brainrl evaluate`
    assert scores["broca_minus_global"]["kind"] == "reward" and "roi:broca − global" in scores
    assert summary["settings"]["seed"] == 7 and summary["settings"]["brain_pipeline"]["model"]["model"] == "synthetic"
    assert summary["prompts"] == PROMPTS and summary["run"]["name"] == "tiny"
    assert "training" in summary["figures"]
    html = (out / "report.html").read_text()
    assert "run_card.json" in html and "Example completions" in html
    captured = capsys.readouterr()
    printed = captured.out
    assert "report.html" in printed and "The target ROI 'broca'" in printed and "broca_minus_global" in printed
    assert f"results: {out / 'report.html'} (open it in a browser)" in printed
    assert "report: figures and HTML" in captured.err  # the statistics and figures are not a silent minute
    assert "scores-table" in html


def test_same_seed_same_completions_and_adapter_changes_them(run_dir):
    """Both models draw from the same seeds; the LoRA adapter (non-zero B) changes what is drawn."""
    from brainrl.evaluation import load_pair, sample_pair
    from brainrl.policy.sampling import SamplingConfig

    settings = resolve_settings(parse("--run", str(run_dir), "-n", "4"))
    model, tokenizer, _ = load_pair(settings.base, settings.adapter, dtype=settings.dtype, device="cpu")
    kwargs = dict(per_prompt=settings.per_prompt, seed=settings.seed, batch_prompts=2, progress=False, kl=False)
    first = sample_pair(model, tokenizer, settings.prompts, SamplingConfig(**settings.sampling), **kwargs)
    again = sample_pair(model, tokenizer, settings.prompts, SamplingConfig(**settings.sampling), **kwargs)
    assert first.texts == again.texts and first.prompt_index.tolist() == [0, 1, 2, 3]
    assert first.prompts_of() == PROMPTS
    assert first.texts["base"] != first.texts["tuned"]


def test_register_adds_the_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--run", "x"])
    assert args.completions is None and args.func.__name__ == "run_compare"


@pytest.mark.slow
def test_compare_reads_a_run_written_by_the_trainer(tmp_path):
    """Format check against the real writer: train 2 AWSFT steps on a saved tiny policy, then compare."""
    from brainrl.policy import load_policy
    from brainrl.policy.tiny import tiny_policy
    from brainrl.rewards.loading import RewardConfig
    from brainrl.train.awsft import AWSFTTrainer
    from brainrl.train.config import AWSFTConfig, DataConfig, LoggingConfig, PolicyConfig, RecipeConfig
    from brainrl.policy.sampling import SamplingConfig

    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    (tmp_path / "heldout.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp_path / "reward.py").write_text("from brainrl.rewards import ROIReward\nreward = ROIReward('broca')\n")
    recipe = RecipeConfig(
        name="tiny-real", seed=3, output_dir=str(tmp_path / "run"),
        policy=PolicyConfig(model=str(tmp_path / "base"), dtype="float32"),
        data=DataConfig(train=str(tmp_path / "heldout.txt"), heldout=str(tmp_path / "heldout.txt")),
        rewards=[RewardConfig(path=str(tmp_path / "reward.py"))],
        awsft=AWSFTConfig(steps=2, prompts_per_step=2, completions_per_prompt=2, checkpoint_every=2),
        sampling=SamplingConfig(max_new_tokens=8), logging=LoggingConfig(report_to=[], progress=False),
    )
    recipe.brain.cache_dir = ""
    model, tokenizer = load_policy(str(tmp_path / "base"), "float32")
    AWSFTTrainer(recipe, model=model, tokenizer=tokenizer).train()
    out = tmp_path / "out"
    assert main(["compare", "--run", str(tmp_path / "run"), "-n", "8", "--out", str(out), "--no-surfaces",
                 "--n-boot", "200", "--n-perm", "200"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == PROMPTS and summary["headline"]["target"] == "broca"
    assert summary["settings"]["seed"] == recipe.eval.seed and "training" in summary["figures"]


def test_fewer_completions_than_prompts_uses_and_reports_only_those_prompts(run_dir, tmp_path):
    prompts = tmp_path / "many.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(6)))
    settings = resolve_settings(parse("--run", str(run_dir), "--prompts", str(prompts), "-n", "4"))
    assert settings.prompts == [f"prompt number {i}" for i in range(4)]
    assert any("-n 4 is less than the 6 prompts" in note for note in settings.notes)
    assert settings.per_prompt == 1 and settings.completions_per_model == 4


def test_explicit_flags_score_a_reward_file_and_all_its_regions(run_dir, tmp_path):
    """No run card: --base/--adapter/--prompts plus --reward; a weighted sum of a contrast (a custom ROI
    against a reference) and a selectivity is scored as one reward, and every ROI it reads gets a row."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS[:3]) + "\n")
    out = tmp_path / "out"
    code = main(["compare", "--adapter", str(run_dir / "adapter"), "--base", str(run_dir.parent / "base_model"),
                 "--prompts", str(prompts), "--reward", str(root / "rewards" / "broca_vs_auditory.py"), "-n", "6",
                 "--out", str(out), "--no-surfaces", "--n-boot", "200", "--n-perm", "200", "--cache-dir", "",
                 "--max-new-tokens", "8", "--dtype", "float32", "--roi", "global"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    scores = {row["name"]: row for row in summary["evaluation"]["scores"]}
    assert scores["ifg_vs_auditory"]["kind"] == "reward" and len(scores["ifg_vs_auditory"]["diff"]["ci"]) == 2
    assert {"roi:left_ifg", "roi:auditory", "roi:broca", "roi:global"} <= set(scores)
    # the target is the reward's first region, an unregistered ROI object defined in the reward file
    assert summary["headline"]["target"] == "left_ifg" and summary["run"] is None
    assert "left_ifg" in summary["roi_names"] and "auditory" in summary["roi_names"]


def test_jsonl_prompt_columns_reach_rewards_and_judges(run_dir, tmp_path):
    """A .jsonl prompt file's columns (as `brainrl theta-prompts` writes θ*) are handed to the scored
    callables once per completion, the way the trainers hand dataset columns to rewards."""
    rows = [{"prompt": p, "target_words": 3 + i} for i, p in enumerate(PROMPTS[:3])]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reward = tmp_path / "near.py"
    reward.write_text("def reward(prompts, completions, target_words, **columns):\n"
                      "    assert len(target_words) == len(completions)\n"
                      "    return [-abs(len(c.split()) - t) for c, t in zip(completions, target_words)]\n")
    settings = resolve_settings(parse("--run", str(run_dir), "--prompts", str(prompts)))
    assert settings.prompt_columns == {"target_words": [3, 4, 5]}
    out = tmp_path / "out"
    assert main(["compare", "--run", str(run_dir), "--prompts", str(prompts), "--reward", str(reward), "-n", "6",
                 "--out", str(out), "--no-surfaces", "--n-boot", "200", "--n-perm", "200", "--cache-dir", ""]) == 0
    summary = json.loads((out / "summary.json").read_text())
    scores = {row["name"]: row for row in summary["evaluation"]["scores"]}
    assert scores["reward"]["n"] == {"base": 6, "tuned": 6} and scores["reward"]["base"]["estimate"] <= 0
