"""`brainrl sbi decode --file`: arbitrary texts, spoken in the campaign format, decoded, tabled and plotted."""

import json

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.sbi.inference.decode import decode_file, posterior_pipeline
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


def test_cross_generator_table_uses_held_out_ids_of_training_campaigns_and_all_rows_of_others(tmp_path):
    """Two procedural campaigns on one projection; a posterior 'trained' on A (its card names A) is scored on
    A's test ids and on every row of B, and its r matches a hand computation on those rows."""
    from pathlib import Path

    from brainrl.sbi.simulation.campaign import Campaign, CampaignConfig, ProjectionConfig, load_campaign_arrays
    from brainrl.sbi.diagnostics.cross_generator import cross_generator_table
    from brainrl.report.stats import pearson
    from brainrl.sbi.inference.estimator import campaign_identity, heldout_rows
    from brainrl.sbi.simulation.procedural import ProceduralGenerator

    pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(out_dir=tmp_path), model=LengthBrain())
    a = CampaignConfig(out_dir=str(tmp_path / "a"), n_items=30, shard_size=30, batch_size=10, seed=0,
                       projection=ProjectionConfig(k=4, t_max=8))
    Campaign(a, generator=ProceduralGenerator(), pipeline=pipeline).run()
    b = CampaignConfig(out_dir=str(tmp_path / "b"), n_items=12, shard_size=12, batch_size=6, seed=1,
                       projection=ProjectionConfig(k=4, t_max=8, projection_from=str(tmp_path / "a" / "projection")))
    Campaign(b, generator=ProceduralGenerator(), pipeline=pipeline).run()
    arrays_a, arrays_b = load_campaign_arrays(a.out_dir), load_campaign_arrays(b.out_dir)
    post = KnownPosterior(k=4, t_max=8)
    post.projection = arrays_a["projection"]
    post.meta = {"config": {"val_fraction": 0.2, "test_fraction": 0.3, "seed": 0},
                 "campaigns": [campaign_identity(arrays_a["manifest"])]}
    from brainrl.sbi.judges.text import TextJudge

    judge = TextJudge.load(None)
    report = cross_generator_table({"p": post}, {"a": a.out_dir, "b": b.out_dir}, tmp_path / "cross", n_samples=40,
                                   judge=judge)
    on_a, on_b = report["results"]["p -> a"], report["results"]["p -> b"]
    # the text judge's r on each campaign's texts (generator fidelity) sits beside the posteriors' rows
    by_judge = report["results"]["text judge -> b"]
    estimates = judge.predict(arrays_b["texts"])
    assert by_judge["n_cases"] == 12 and by_judge["pearson_r"]["certainty"] == pytest.approx(
        pearson(estimates[:, 4], arrays_b["theta"][:, 4]), abs=1e-6)
    assert set(on_b["calibration_log_gamma"]) == set(on_b["ecdf_band_excursion"]) == set(on_b["pearson_r"])
    rows = heldout_rows(arrays_a["ids"], post.meta, "test")
    assert on_a["trained_on_this_campaign"] and on_a["n_cases"] == len(rows) > 2
    assert not on_b["trained_on_this_campaign"] and on_b["n_cases"] == 12
    means = post.sample((arrays_b["coeffs"], arrays_b["mask"]), 40, seed=0).mean(axis=1)
    assert on_b["pearson_r"]["valence"] == pytest.approx(pearson(means[:, 0], arrays_b["theta"][:, 0]), abs=1e-6)
    assert (Path(tmp_path) / "cross" / "cross_generator.md").read_text().startswith("| train → test")
