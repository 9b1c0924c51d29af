"""`brainrl sbi decode --file`: arbitrary texts, spoken in the campaign format, decoded, tabled and plotted."""

import json

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.sbi.decode import decode_file, posterior_pipeline
from tests.helpers import CountingSpeech, LengthBrain
from tests.sbi.theta_fakes import KnownPosterior


def test_decode_file_table_plot_and_failures(tmp_path):
    pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path),
                             model=LengthBrain(fail_words="BROKEN"))
    texts = tmp_path / "headlines.txt"
    texts.write_text("# comment\n1. Storm hits the coast tonight\n\nCouncil approves the budget\nBROKEN text\n")
    post = KnownPosterior()
    report = decode_file(post, texts, tmp_path / "out", n_samples=50, pipeline=pipeline)
    rows = report["rows"]
    assert [r["text"] for r in rows] == ["1. Storm hits the coast tonight", "Council approves the budget", "BROKEN text"]
    assert rows[0]["spoken"] == "Storm hits the coast tonight."
    expected = post.sample(pipeline(["Storm hits the coast tonight."]), 50, seed=0).mean(axis=1)[0]
    assert np.allclose(list(rows[0]["posterior_mean"].values()), expected, atol=1e-4)
    assert rows[2]["failed"] and "posterior_mean" not in rows[2]
    assert (tmp_path / "out" / "decoded.png").is_file()
    assert json.loads((tmp_path / "out" / "decoded.json").read_text())["n_samples"] == 50
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no texts"):
        decode_file(post, empty, tmp_path / "o2", pipeline=pipeline)


def test_posterior_pipeline_comes_from_the_card():
    meta = {"campaigns": [{"pipeline": {"pipeline": {"speech": "espeak", "model": "synthetic", "cache_dir": ""}}}]}
    assert posterior_pipeline(meta).model == "synthetic"
    with pytest.raises(ValueError, match="records no campaign pipeline"):
        posterior_pipeline({"campaigns": []})
