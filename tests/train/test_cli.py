import argparse

import pytest

from brainrl.cli import train as train_cli
from brainrl.train.__main__ import main as module_main


def parser():
    p = argparse.ArgumentParser(prog="brainrl")
    train_cli.register(p.add_subparsers(dest="command"))
    return p


def test_train_and_evaluate_commands_parse():
    args = parser().parse_args(["train", "--recipe", "recipes/offline_broca.yaml", "--set", "awsft.steps=3",
                                "--set", "seed=2", "--resume"])
    assert args.func is train_cli._train and args.overrides == ["awsft.steps=3", "seed=2"] and args.resume
    args = parser().parse_args(["evaluate", "--run", "runs/x"])
    assert args.func is train_cli._evaluate and args.run == "runs/x"


def test_module_entry_reports_bad_recipe_field(capsys):
    assert module_main(["--recipe", "recipes/offline_broca.yaml", "--set", "awsft.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "awsft.stepz" in err and "steps" in err


def test_evaluate_needs_a_finished_run(tmp_path):
    from brainrl.train.evaluate import evaluate_run

    with pytest.raises(FileNotFoundError, match="run_card.json"):
        evaluate_run(tmp_path)


def test_train_ends_saying_where_results_went_and_what_next(monkeypatch, capsys, tmp_path):
    import brainrl.train

    seen = {}

    def fake_run_recipe(recipe, **kwargs):  # stands in for minutes of training; the message is under test
        seen["recipe"] = recipe
        return {"train": {}, "eval": None}

    monkeypatch.setattr(brainrl.train, "run_recipe", fake_run_recipe)
    out = tmp_path / "run"
    assert module_main(["--recipe", "recipes/offline_broca.yaml", "--set", f"output_dir={out}", "--no-eval"]) == 0
    printed = capsys.readouterr().out
    assert seen["recipe"].output_dir == str(out)
    assert f"results: {out}/ (adapter/, metrics.jsonl, completions.jsonl, run_card.json)" in printed
    assert f"brainrl compare --run {out}" in printed and f"brainrl evaluate --run {out}" in printed
