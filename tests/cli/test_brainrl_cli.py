"""The `brainrl` command line end to end on the offline defaults (real espeak + synthetic model)."""

import json

import numpy as np
import pytest

from brainrl.cli.main import main


def test_predict_writes_maps_and_provenance(tmp_path, capsys):
    out = tmp_path / "maps"
    code = main(["predict", "The ship left at dawn.", "", "--out", str(out), "--cache-dir", ""])
    assert code == 1  # one item failed (the empty text), and the command says so
    index = json.loads((out / "predictions.json").read_text())
    assert index["items"][1]["error"].startswith("empty completion")
    data = np.load(out / index["items"][0]["file"])
    assert data.shape[1] == 20484 and data.dtype == np.float32
    assert index["items"][0]["provenance"]["synthetic"] is True
    assert index["pipeline"]["speech"]["speech_engine"] == "espeak"


def test_reward_prints_values_and_none(capsys):
    code = main(["reward", "--roi", "broca", "--statistic", "minus_global", "--json", "--cache-dir", "",
                 "A short sentence.", "   "])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1 and isinstance(lines[0]["reward"], float) and lines[1]["reward"] is None
    assert "empty" in lines[1]["error"] and lines[0]["name"] == "broca_minus_global"


def test_unknown_roi_is_one_clear_line_with_a_suggestion(capsys):
    assert main(["reward", "--roi", "brocca", "x"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'broca'" in err and "Traceback" not in err
    with pytest.raises(KeyError):
        main(["--verbose", "reward", "--roi", "brocca", "x"])


def test_rois_list_and_plot(tmp_path, capsys):
    assert main(["rois", "show", "broca", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["n_vertices"] == 187 and shown["hemisphere"] == "left"
    png = tmp_path / "broca.png"
    assert main(["plot", "--roi", "broca", "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_demo_examples_print_shapes_and_rewards(capsys):
    assert main(["demo", "--examples-only"]) == 0
    out = capsys.readouterr().out
    assert "(2, 20484)" in out and "broca mean" in out and "failed: empty completion" in out
