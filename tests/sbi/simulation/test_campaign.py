import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
from brainrl.sbi.simulation.campaign import Campaign, CampaignConfig, ProjectionConfig, load_campaign_arrays, merge_shards
from brainrl.configs import build
from brainrl.sbi.simulation.prior import theta_for_index
from brainrl.brain.base import MAP_ATOL, MAP_RTOL

from sbi_fakes import ScriptedGenerator


@pytest.fixture(scope="module")
def pipeline():
    """The real offline path: espeak-ng speech and the synthetic brain model (no disk cache)."""
    return BrainPipeline(PipelineConfig(cache_dir=""))


def _config(tmp_path, n=12, **kw):
    return CampaignConfig(out_dir=str(tmp_path / "camp"), n_items=n, shard_size=4, batch_size=2, seed=5,
                          projection=ProjectionConfig(k=8), **kw)


def test_campaign_writes_topic_balanced_projected_dataset(tmp_path, pipeline, capfd):
    cfg = _config(tmp_path, n=10, topics=["weather", "sports"])
    result = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    assert "Saving the dataset" not in capfd.readouterr().err  # no datasets bar per shard
    data = load_campaign_arrays(cfg.out_dir)
    assert list(data["ids"]) == list(range(10)) and result.n_failed == 0
    assert data["coeffs"].shape == (10, 48, 8) and data["mask"].shape == (10, 48)
    assert data["topics"].count("weather") == data["topics"].count("sports") == 5
    assert np.allclose(data["theta"][3], theta_for_index(5, 3), atol=1e-6)
    # padded frames are zero; valid ones are not; headlines unique across the split
    n3 = int(data["mask"][3].sum())
    assert 0 < n3 < 48 and np.all(data["coeffs"][3, n3:] == 0) and np.any(data["coeffs"][3, :n3] != 0)
    heads = [h for block in data["headlines"] for h in block]
    assert len(heads) == len(set(heads)) == 50
    manifest = json.loads((Path(cfg.out_dir) / "campaign.json").read_text())
    assert manifest["generator"]["backend"] == "scripted" and manifest["pipeline"]["model"]["model"] == "synthetic"
    assert manifest["versions"]["datasets"] and manifest["config"]["seed"] == 5
    assert data["projection"].k == 8 and data["projection"].n_fit_frames > 8


def _reference_items(tmp_path, pipeline, cfg_kwargs=None):
    ref = _config(tmp_path / "ref", **(cfg_kwargs or {}))
    Campaign(ref, generator=ScriptedGenerator(), pipeline=pipeline).run()
    return load_campaign_arrays(ref.out_dir)


def test_crash_mid_campaign_then_resume_loses_and_duplicates_nothing(tmp_path, pipeline):
    cfg = _config(tmp_path)
    # 12 items, shards of 4, 2 items per generator call: call 5 is inside shard 2 (after shards 0, 1 are written)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Campaign(cfg, generator=ScriptedGenerator(fail_on_call=6), pipeline=pipeline).run()
    done = sorted(p.name for p in (Path(cfg.out_dir) / "shards").iterdir())
    assert done == ["shard-00000", "shard-00001"]
    gen = ScriptedGenerator()
    result = Campaign(cfg, generator=gen, pipeline=pipeline).run()
    assert result.shards_skipped == [0, 1] and result.shards_written == [2]
    assert gen.calls == 2  # only shard 2's four items were generated again
    data = load_campaign_arrays(cfg.out_dir)
    assert list(data["ids"]) == list(range(12))
    ref = _reference_items(tmp_path, pipeline)  # an uninterrupted run gives the same items
    assert data["headlines"] == ref["headlines"] and np.allclose(data["coeffs"], ref["coeffs"], rtol=MAP_RTOL, atol=MAP_ATOL)


def test_half_written_shard_is_discarded_on_resume(tmp_path, pipeline):
    cfg = _config(tmp_path, n=8)
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run(merge=False)
    shard1 = Path(cfg.out_dir) / "shards" / "shard-00001"
    (shard1 / "brainrl_shard.json").unlink()  # as if killed before the shard's marker landed
    os.replace(shard1, shard1.parent / ".tmp-shard-00001")
    result = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    assert result.shards_written == [1] and list(load_campaign_arrays(cfg.out_dir)["ids"]) == list(range(8))


def test_ranks_write_their_own_shards_and_merge(tmp_path, pipeline):
    cfg = _config(tmp_path)
    r0 = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline, rank=0, world_size=2).run(merge=False)
    r1 = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline, rank=1, world_size=2).run(merge=False)
    assert r0.shards_written == [0, 2] and r1.shards_written == [1]
    merge_shards(cfg.out_dir)
    data = load_campaign_arrays(cfg.out_dir)
    assert list(data["ids"]) == list(range(12))
    ref = _reference_items(tmp_path, pipeline)
    assert np.allclose(data["coeffs"], ref["coeffs"], rtol=MAP_RTOL, atol=MAP_ATOL)


def test_cross_rank_repeated_headline_is_simulated_again_not_dropped(tmp_path, pipeline):
    from datasets import load_from_disk

    cfg = _config(tmp_path, n=8)
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline, rank=0, world_size=2).run(merge=False)
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline, rank=1, world_size=2).run(merge=False)
    # two ranks running at the same time cannot see each other's newest headlines: make shard 1 reuse one of
    # shard 0's
    shards = Path(cfg.out_dir) / "shards"
    taken = load_from_disk(str(shards / "shard-00000"))["headlines"][2][0]
    part = load_from_disk(str(shards / "shard-00001"))
    original = part["headlines"][1]
    part = part.map(lambda row: {"headlines": [taken] + row["headlines"][1:]} if row["id"] == 5 else row)
    part.save_to_disk(str(tmp_path / "patched"))
    (tmp_path / "patched" / "brainrl_shard.json").write_text((shards / "shard-00001" / "brainrl_shard.json").read_text())
    import shutil

    shutil.rmtree(shards / "shard-00001")
    os.replace(tmp_path / "patched", shards / "shard-00001")
    # merging by hand (`--merge-only`, no generator) can only drop the later item, and says so
    merge_shards(cfg.out_dir)
    summary = json.loads((Path(cfg.out_dir) / "merge.json").read_text())
    assert summary["n_rows"] == 7
    assert summary["failures"] == [{"id": 5, "stage": "merge", "reason": f"headline repeated across ranks: {taken!r}"}]
    # the campaign itself (rank 0, at its merge) simulates the item again, avoiding every headline of the split
    generator = ScriptedGenerator()
    result = Campaign(cfg, generator=generator, pipeline=pipeline, rank=0, world_size=2).run()
    assert result.shards_skipped == [0] and generator.calls == 1
    data = load_campaign_arrays(cfg.out_dir)
    summary = json.loads((Path(cfg.out_dir) / "merge.json").read_text())
    assert list(data["ids"]) == list(range(8)) and summary["n_failed"] == 0
    heads = [h for block in data["headlines"] for h in block]
    assert len(heads) == len(set(heads)) == 40
    redone = data["headlines"][5]
    # the patched block repeated `taken`; simulated again, item 5 gets its own draw back (unique in the split)
    assert taken not in redone and redone == original
    meta = json.loads((shards / "shard-00001" / "brainrl_shard.json").read_text())
    assert meta["repaired"] == [{"id": 5, "why": "headline repeated across ranks"}] and meta["ids"] == [4, 5, 6, 7]
    ref = _reference_items(tmp_path, pipeline)  # 12 items; ids 0-7 are the same items
    assert np.allclose(data["coeffs"], ref["coeffs"][:8], rtol=MAP_RTOL, atol=MAP_ATOL)


def test_rank_without_the_basis_parks_its_shards_instead_of_waiting(tmp_path, pipeline):
    cfg = _config(tmp_path)  # 3 shards: rank 1 owns shard 1, rank 0 shards 0 and 2
    cfg.merge_wait_s = 5.0  # a rank that waited for the basis would time out here
    r1 = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline, rank=1, world_size=2)
    result = r1.run()
    assert result.shards_written == [] and sorted(r1.pending_shards()) == [1]
    assert not (Path(cfg.out_dir) / "projection").exists()
    # rank 0 fits the basis on shard 0, projects rank 1's parked shard, and merges: nothing simulated twice
    generator = ScriptedGenerator()
    r0 = Campaign(cfg, generator=generator, pipeline=pipeline, rank=0, world_size=2)
    r0.run()
    assert r0.pending_shards() == {} and generator.calls == 4  # shards 0 and 2 only, 2 items per call
    assert not list((Path(cfg.out_dir) / "shards").glob(".*"))
    data = load_campaign_arrays(cfg.out_dir)
    ref = _reference_items(tmp_path, pipeline)
    assert list(data["ids"]) == list(range(12)) and data["headlines"] == ref["headlines"]
    assert np.allclose(data["coeffs"], ref["coeffs"], rtol=MAP_RTOL, atol=MAP_ATOL)


def test_local_campaign_resumes_with_another_batch_size(tmp_path, pipeline):
    """The local generator samples per request, so batch_size is no longer part of a campaign's identity;
    campaigns made when it was (local generator, batch_size in the fingerprint) still resume."""
    from brainrl.sbi.simulation.generators import GeneratorConfig

    cfg = _config(tmp_path, generator=GeneratorConfig("local", {"model": "smollm2"}))
    other = _config(tmp_path, generator=GeneratorConfig("local", {"model": "smollm2"}))
    other.batch_size = 3
    assert cfg.fingerprint() == other.fingerprint()
    old = cfg.legacy_fingerprints() - other.legacy_fingerprints()
    assert len(old) == 1  # the fingerprint with batch_size 2 in it
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "campaign.json").write_text(json.dumps({"fingerprint": old.pop(), "config": {"n_items": 12}}))
    campaign = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline)
    campaign._check_or_write_manifest()
    assert campaign.fingerprint != cfg.fingerprint()  # resumes under its recorded fingerprint
    with pytest.raises(ValueError, match="different campaign"):
        Campaign(other, generator=ScriptedGenerator(), pipeline=pipeline)._check_or_write_manifest()


def test_resume_refuses_a_different_campaign(tmp_path, pipeline):
    cfg = _config(tmp_path, n=4)
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    other = build(CampaignConfig, {**json.loads((Path(cfg.out_dir) / "campaign.json").read_text())["config"],
                                       "seed": 6})
    with pytest.raises(ValueError, match="fields differ: seed"):
        Campaign(other, generator=ScriptedGenerator(), pipeline=pipeline).run()


def test_generator_failures_are_recorded_not_dropped(tmp_path, pipeline):
    cfg = _config(tmp_path, n=4)
    gen = ScriptedGenerator(lambda m, s: "nonsense" if "sports" in m[1]["content"] else ScriptedGenerator.good_block(m, s))
    cfg.writer.max_attempts = 2
    Campaign(cfg, generator=gen, pipeline=pipeline).run()
    summary = json.loads((Path(cfg.out_dir) / "merge.json").read_text())
    assert [f["id"] for f in summary["failures"]] == [1] and "after 2 attempts" in summary["failures"][0]["reason"]
    assert list(load_campaign_arrays(cfg.out_dir)["ids"]) == [0, 2, 3]


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time, signal
    sys.path[:0] = [{root!r}, {tests!r}]
    import torch; torch.set_num_threads(1)
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.sbi.simulation.campaign import Campaign, CampaignConfig, ProjectionConfig
    from sbi_fakes import ScriptedGenerator
    cfg = CampaignConfig(out_dir={out!r}, n_items=12, shard_size=4, batch_size=2, seed=5, projection=ProjectionConfig(k=8))
    kill_at = int(sys.argv[1])
    def on_batch(last_id):
        if last_id >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no finally: a hard kill
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=BrainPipeline(PipelineConfig(cache_dir=""))).run(on_batch=on_batch)
""")


@pytest.mark.slow
def test_sigkill_subprocess_then_resume(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    out = str(tmp_path / "camp")
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=root, tests=str(Path(__file__).parent), out=out))
    killed = subprocess.run([sys.executable, str(script), "7"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9
    finished = subprocess.run([sys.executable, str(script), "999"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert list(load_campaign_arrays(out)["ids"]) == list(range(12))


def test_campaigns_share_a_projection_and_combine_with_their_own_splits(tmp_path, pipeline):
    """Campaign B reuses A's basis (projection_from), so one posterior can fit both; a campaign with its
    own basis is refused with the fix; each campaign keeps the split it has alone."""
    from brainrl.sbi.simulation.campaign import combine_campaign_arrays
    from brainrl.sbi.inference.estimator import EstimatorConfig, campaign_rows, split_ids
    from brainrl.sbi.simulation.procedural import ProceduralGenerator

    a = _config(tmp_path / "a", n=8)
    Campaign(a, generator=ProceduralGenerator(), pipeline=pipeline).run()
    b = _config(tmp_path / "b", n=8)
    b.projection.projection_from = str(Path(a.out_dir) / "projection")
    b.seed = 6
    Campaign(b, generator=ProceduralGenerator(), pipeline=pipeline).run()
    c = _config(tmp_path / "c", n=8)
    c.seed = 7
    Campaign(c, generator=ProceduralGenerator(), pipeline=pipeline).run()
    both = combine_campaign_arrays([a.out_dir, b.out_dir])
    assert len(both["ids"]) == 16 and list(both["source"]) == [0] * 8 + [1] * 8
    assert both["texts"][9] == load_campaign_arrays(b.out_dir)["texts"][1]
    config = EstimatorConfig(val_fraction=0.25, test_fraction=0.25, seed=1)
    rows = campaign_rows(both, config)
    alone = split_ids(np.arange(8), 0.25, 0.25, 1)
    assert sorted(rows["test"][rows["test"] >= 8] - 8) == sorted(alone["test"])
    assert sorted(rows["test"][rows["test"] < 8]) == sorted(alone["test"])
    with pytest.raises(ValueError, match="projection_from"):
        combine_campaign_arrays([a.out_dir, c.out_dir])
    # OOD statistics of a posterior fitted on both: from the folders given (`ood-fit --data A --data B`) or recorded
    from theta_fakes import KnownPosterior

    from brainrl.sbi.inference.ood import fit_ood

    post = KnownPosterior(k=both["coeffs"].shape[2], t_max=both["coeffs"].shape[1])
    post.projection = both["projection"]
    post.meta = {"data": {"dir": [a.out_dir, b.out_dir], "fingerprint": "other"}, "config": {}}
    given = fit_ood(post, [a.out_dir, b.out_dir])
    recorded = fit_ood(post)
    assert given.meta["n_items"] == recorded.meta["n_items"] == 16
    np.testing.assert_allclose(given.reference, recorded.reference, rtol=1e-9)


def test_finished_campaign_grows_in_place_and_merge_checks_every_shard(tmp_path, pipeline):
    cfg = _config(tmp_path, n=8)
    Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    before = load_campaign_arrays(cfg.out_dir)
    cfg.n_items = 12
    result = Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    after = load_campaign_arrays(cfg.out_dir)
    assert result.shards_skipped == [0, 1] and list(after["ids"]) == list(range(12))
    assert np.array_equal(after["coeffs"][:8], before["coeffs"])
    manifest = json.loads((Path(cfg.out_dir) / "campaign.json").read_text())
    assert manifest["config"]["n_items"] == 12 and manifest["grown"][0]["from"] == 8
    cfg.n_items = 4
    with pytest.raises(ValueError, match="shrink"):
        Campaign(cfg, generator=ScriptedGenerator(), pipeline=pipeline).run()
    meta_path = Path(cfg.out_dir) / "shards" / "shard-00001" / "brainrl_shard.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "projection": "another-basis"}))
    with pytest.raises(ValueError, match="another basis"):
        merge_shards(cfg.out_dir)
    meta_path.write_text(json.dumps({**meta, "campaign_fingerprint": "other"}))
    with pytest.raises(ValueError, match="another campaign"):
        merge_shards(cfg.out_dir)


def test_campaign_stopped_early_is_truncated_by_merge_only_and_grows_again(tmp_path, pipeline):
    from brainrl.cli.main import main

    cfg = _config(tmp_path)  # 12 items in 3 shards; stop after shard 1 (a kill during shard 2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Campaign(cfg, generator=ScriptedGenerator(fail_on_call=5), pipeline=pipeline).run()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({**json.loads((Path(cfg.out_dir) / "campaign.json").read_text())["config"],
                                  "n_items": 12}))
    # merging all 12 needs shard 2: refused with a one-line error
    assert main(["simulate", "--recipe", str(recipe), "--merge-only"]) != 0
    assert main(["simulate", "--recipe", str(recipe), "--merge-only", "--n-items", "8"]) == 0
    manifest = json.loads((Path(cfg.out_dir) / "campaign.json").read_text())
    assert manifest["config"]["n_items"] == 8 and manifest["truncated"][0]["from"] == 12
    assert list(load_campaign_arrays(cfg.out_dir)["ids"]) == list(range(8))
    with pytest.raises(ValueError, match="multiple of shard_size"):
        from brainrl.sbi.simulation.campaign import truncate_campaign

        truncate_campaign(cfg.out_dir, 6)
    generator = ScriptedGenerator()
    Campaign(cfg, generator=generator, pipeline=pipeline).run()  # n_items 12 again: only shard 2 is simulated
    assert generator.calls == 2 and list(load_campaign_arrays(cfg.out_dir)["ids"]) == list(range(12))
