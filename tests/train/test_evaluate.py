import json

import pytest

from brainrl.evaluation import EvalConfig
from brainrl.policy.tiny import tiny_policy
from brainrl.train.awsft import AWSFTTrainer
from brainrl.train.evaluate import evaluate_run, print_eval

from helpers import PROMPTS, tiny_recipe, token_count_reward


def test_evaluate_run_end_to_end_on_tiny_policy(tmp_path, capsys):
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("describe the river\nexplain the storm\ntell a story about a poet\nwrite news about a city\n")
    recipe = tiny_recipe(tmp_path, steps=1)
    recipe.data.heldout = str(heldout)
    recipe.eval = EvalConfig(completions_per_prompt=2, min_completions=8, batch_prompts=4, rois=["wernicke"])
    model, tok = tiny_policy(seed=0)
    AWSFTTrainer(recipe, model=model, tokenizer=tok, reward_funcs=[token_count_reward], train_prompts=PROMPTS).train()
    base, tok = tiny_policy(seed=0)
    capsys.readouterr()
    result = evaluate_run(recipe.output_dir, model=base, tokenizer=tok, progress=True)
    bars = capsys.readouterr().err  # minutes on a real run: progress bars for generating and scoring, not silence
    assert "score (brain maps, rewards)" in bars  # (one generation batch here: its bar shows from two on)
    assert result["completions_per_model"] == 8 and result["completions_per_prompt"] == 2 and result["prompts"] == 4
    scores = {row["name"]: row for row in result["scores"]}
    # the recipe's reward as trained, with an interval; its ROI and the extra eval ROI; length
    assert scores["broca_minus_global"]["kind"] == "reward"
    for name in ("broca_minus_global", "roi:broca", "roi:broca − global", "roi:wernicke", "roi:global", "words", "tokens"):
        row = scores[name]
        assert row["n"]["base"] + row["failed"]["base"] == 8  # failed maps are counted, not zero-filled
        low, high = row["diff"]["ci"]
        if row["n"]["base"] == 8 and row["n"]["tuned"] == 8:
            assert low <= row["diff"]["estimate"] <= high
    assert result["kl_to_base_per_token"] > 0
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["interval"]["unit"] == "prompt" and saved["seed"] == 1234
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval_completions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]["roi:broca"]) == {"base", "tuned"}
    print_eval(result)
    assert "broca_minus_global" in capsys.readouterr().out


def test_old_run_cards_still_open(tmp_path):
    """A card written before eval.bootstrap was retired still opens; unknown fields still fail."""
    from brainrl.train.runs import Run

    recipe = tiny_recipe(tmp_path)
    card = {"recipe": {**recipe.to_dict(), "eval": {**recipe.to_dict()["eval"], "bootstrap": 2000}},
            "recipe_path": "/nowhere/recipes/x.yaml"}
    (tmp_path / "run_card.json").write_text(json.dumps(card))
    run = Run.open(tmp_path)
    assert run.recipe.source_path == "/nowhere/recipes/x.yaml" and run.adapter_dir == tmp_path / "adapter"
    (tmp_path / "held.txt").write_text("a\n")
    assert run.resolve("held.txt") == tmp_path / "held.txt"  # the run folder is the last place looked
    card["recipe"]["eval"]["bootstrapp"] = 1
    (tmp_path / "run_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="bootstrapp"):
        Run.open(tmp_path)
