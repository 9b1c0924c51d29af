"""`brainrl distill` from text files end to end (the real offline teacher), then `brainrl reward` on the
student through the registered surrogate model."""

from __future__ import annotations

import json
from pathlib import Path

from brainrl.cli.main import main

from tests.brain.surrogate_helpers import varied_texts

ROOT = Path(__file__).resolve().parents[2]


def test_distill_from_texts_then_reward_through_the_student(tmp_path, capsys):
    texts = varied_texts(150, seed=3)
    (tmp_path / "train.txt").write_text("\n".join(texts[:120]) + "\n")
    (tmp_path / "heldout.txt").write_text("\n".join(texts[120:]) + "\n")
    out = tmp_path / "student"
    code = main(["distill", "--recipe", str(ROOT / "recipes" / "offline_broca.yaml"), "--set", "brain.cache_dir=",
                 "--out", str(out), "--texts", str(tmp_path / "train.txt"), "--heldout-texts",
                 str(tmp_path / "heldout.txt"), "--k", "16"])
    printed = capsys.readouterr().out
    assert code == 0 and "Held-out fidelity" in printed and "model: surrogate" in printed
    card = json.loads((out / "card.json").read_text())
    assert card["data"]["train"]["n"] == 120 and card["data"]["heldout"]["n"] == 30
    assert card["teacher"]["pipeline"]["model"] == "synthetic" and card["teacher"]["pipeline"]["speech"] == "espeak"
    assert card["heldout_fidelity"]["rois"]["broca"]["selectivity"]["r"] > 0.85
    assert set(card["heldout_fidelity"]["rois"]) >= {"broca", "wernicke", "v1", "auditory"}  # every preset ROI
    code = main(["reward", "--model", "surrogate", "--speech", "text-only", "--model-arg", f"path={out}",
                 "--cache-dir", "", "--roi", "broca", "--statistic", "minus_global", "--json",
                 "The committee, which met in secret, approved the bridge.", " "])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and isinstance(lines[0]["reward"], float) and lines[1]["reward"] is None


def test_distill_without_data_is_a_clear_error(tmp_path, capsys):
    code = main(["distill", "--recipe", str(ROOT / "recipes" / "offline_broca.yaml"), "--out", str(tmp_path / "s"),
                 "--per-prompt", "0"])
    assert code == 2 and "No training texts" in capsys.readouterr().err
