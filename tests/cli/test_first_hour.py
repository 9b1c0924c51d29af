"""The mistakes and wishes of a first hour with brainrl: ordinary mistakes are one line (no traceback),
conveniences exist, figures say what they show."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from brainrl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys, code, expected_code=2) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def argparse_error(capsys, argv) -> str:
    """argparse rejects the value: exit status 2, usage + one error line, no traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def four_frame_map(tmp_path_factory):
    out = tmp_path_factory.mktemp("maps")
    assert main(["predict", "The committee, which had met in secret, approved the bridge.", "--out", str(out),
                 "--cache-dir", ""]) == 0
    return out / "00000.npy"


def test_plot_frame_out_of_range_is_one_line(four_frame_map, tmp_path, capsys):
    frames = np.load(four_frame_map).shape[0]
    err = one_error_line(capsys, main(["plot", "--map", str(four_frame_map), "--frame", str(frames + 5),
                                       "--out", str(tmp_path / "m.png")]))
    assert f"--frame {frames + 5} is out of range" in err and f"0 to {frames - 1}" in err


def test_unknown_model_arg_is_one_line_with_a_suggestion(capsys):
    err = one_error_line(capsys, main(["predict", "A short text.", "--model-arg", "sed=1", "--cache-dir", ""]))
    assert "brain model 'synthetic' takes no argument 'sed'. Did you mean 'seed'?" in err


def test_out_naming_a_file_or_a_folder_is_refused(tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    assert "is a file; name a folder" in argparse_error(capsys, ["predict", "A text.", "--out", str(taken)])
    assert "is a file; name a folder" in argparse_error(capsys, ["sbi", "fit", "--data", "d", "--out", str(taken)])
    assert "is a folder; name a file" in argparse_error(capsys, ["plot", "--roi", "broca", "--out", str(tmp_path)])


@pytest.mark.parametrize("value", ["-5", "0", "many"])
def test_simulate_n_items_must_be_positive(capsys, value):
    line = argparse_error(capsys, ["simulate", "--recipe", "recipes/campaign_offline.yaml", "--n-items", value])
    assert "--n-items" in line and (">= 1" in line)


def test_text_file_of_blank_lines_is_an_error_and_comments_are_skipped(tmp_path, capsys):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n# only a comment\n")
    err = one_error_line(capsys, main(["reward", "--file", str(blank), "--cache-dir", ""]))
    assert "holds no texts" in err
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("# completions to try\nThe cat sat on the mat.\n\n  # indented comment\nRain is expected.\n")
    assert main(["reward", "--file", str(mixed), "--json", "--cache-dir", ""]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1] and all(isinstance(r["reward"], float) for r in rows)


def test_shipped_prompt_file_comments_are_not_scored(capsys):
    path = ROOT / "recipes" / "data" / "prompts_heldout.txt"
    comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert comments  # the shipped file has comment lines
    from brainrl.cli.common import read_texts

    texts = read_texts([], str(path))
    assert not any(t.startswith("#") for t in texts) and len(texts) == 24


def test_rois_labels_lists_every_destrieux_label(capsys):
    assert main(["rois", "labels", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert len(rows) == 76 and "G_front_inf-Opercular" in names and "Medial_wall" in names
    assert sum(r["left_vertices"] + r["right_vertices"] for r in rows) == 20484
    assert main(["rois", "labels"]) == 0 and "G_front_inf-Triangul" in capsys.readouterr().out


def test_reward_file_scores_texts_as_a_recipe_would(capsys):
    text = "The committee, which had met in secret, approved the bridge."
    assert main(["reward", "--reward-file", str(ROOT / "rewards" / "broca_vs_auditory.py"), "--json", "--cache-dir",
                 "", text]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from brainrl.brain.pipeline import PipelineConfig
    from brainrl.rewards import load_rewards

    (fn,), _ = load_rewards([{"path": str(ROOT / "rewards" / "broca_vs_auditory.py")}], PipelineConfig(cache_dir=""))
    assert row["name"] == "ifg_vs_auditory" and row["reward"] == pytest.approx(fn(None, [text])[0], rel=1e-6)
    bad = ROOT / "rewards" / "does_not_exist.py"
    err = one_error_line(capsys, main(["reward", "--reward-file", str(bad), "x"]))
    assert "does_not_exist.py' not found" in err


def test_predict_and_reward_say_where_results_went_and_what_next(tmp_path, capsys):
    out = tmp_path / "maps"
    assert main(["predict", "Another sentence here.", "--out", str(out), "--cache-dir", ""]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}/" in printed and f"next: brainrl plot --map {out / '00000.npy'}" in printed
    assert main(["reward", "One more sentence.", "--cache-dir", ""]) == 0
    assert "scored 1 text(s)" in capsys.readouterr().out


def test_map_plot_title_units_background_and_medial_wall(four_frame_map):
    from matplotlib.colors import to_rgb

    from brainrl.cli.rois import _map_title
    from brainrl.cortex.plot import RESPONSE_LABEL, draw_views, medial_wall

    title = _map_title(four_frame_map, 4, None)
    assert title.startswith("Predicted response (synthetic, mean of 4 frames)") and "committee" in title
    assert _map_title(four_frame_map, 4, 2).startswith("Predicted response (synthetic, frame 2 of 4)")

    wall = medial_wall()
    assert 1500 < wall.sum() < 2000  # fsaverage5's medial wall, both hemispheres
    values = np.where(wall, 0.0, 1.0)  # cortex uniformly high; the medial wall at the bottom of the scale
    figure = draw_views(values, "uniform", "viridis", 0.0, 1.0, label=RESPONSE_LABEL)
    assert figure.axes[-1].get_ylabel() == RESPONSE_LABEL and figure._suptitle.get_text() == "uniform"
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3] / 255.0
    low = np.array(to_rgb("#440154"))  # viridis(0): the "dark blob" colour
    dark_blob = (np.abs(image - low).max(axis=2) < 0.08).sum()
    assert dark_blob < 1000, f"{dark_blob} pixels of the medial wall drawn as data"  # ~16,700 when drawn (main)
    # (the few left are the bottom of the colour bar)
    # the cortex is shaded by sulcal depth (uniform data is not one flat colour)
    yellowish = (image[..., 0] > image[..., 2] + 0.15) & (image[..., 1] > image[..., 2] + 0.15)
    brightness = image[yellowish].mean(axis=1)
    assert yellowish.sum() > 10_000 and brightness.std() > 0.03


def test_unreachable_and_unauthorised_brain_servers_are_one_line(capsys):
    from brainrl.brain.server import BrainServer
    from brainrl.brain.synthetic import SyntheticBrainModel
    from brainrl.stimulus import get_speech_engine

    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    err = one_error_line(capsys, main(["predict", "A text.", "--model", "remote", "--model-arg",
                                       f"url=http://127.0.0.1:{free}", "--model-arg", "retries=0", "--cache-dir", ""]))
    assert "cannot reach" in err and "Is `brainrl serve` running there?" in err
    server = BrainServer(SyntheticBrainModel(), port=0, token="s3cret", speech=get_speech_engine("espeak")).start()
    try:
        err = one_error_line(capsys, main(["predict", "A text.", "--model", "remote", "--model-arg",
                                           f"url={server.url}", "--cache-dir", ""]))
        assert "HTTP 401" in err and "--model-arg token=TOKEN" in err
    finally:
        server.close()


def test_reward_values_have_a_documented_scale(capsys):
    assert main(["reward", "A sentence to score.", "--cache-dir", ""]) == 0
    pointer = re.search(r"see (docs/\S+\.md)#([\w-]+)", capsys.readouterr().out)
    page, anchor = pointer.groups()
    headings = [line.lstrip("#").strip().lower().replace(" ", "-") for line in (ROOT / page).read_text().splitlines()
                if line.startswith("#")]
    assert anchor in headings
    section = (ROOT / page).read_text().split("### Reward scale", 1)[1].split("\n## ", 1)[0]
    assert "a.u." in section and "[−6, 0]" in section and "synthetic" in section and "TRIBE" in section
