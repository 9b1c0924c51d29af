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
