"""Issue 8, item 3: the multi-GPU runs as two CPU processes under ``torchrun`` (slow tier).

* GRPO and AWSFT with two ranks scoring their completions through one ``brainrl serve`` process.
* A simulation campaign sharded over two ranks and merged by rank 0.

``accelerate launch --cpu --num_processes 2`` silently runs one process, so these use torchrun.
Run: ``python -m pytest tests/distributed -m slow -s`` (-s prints the wall times).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from torchrun_helpers import ROOT, BrainServe, SeededChatServer, headline_block, save_tiny_policy, subprocess_env, torchrun

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 300
PROMPTS = ["tell a story about a river", "explain the weather", "describe a small garden", "write news about music"]
STEPS, COMPLETIONS_PER_RANK = 2, 2


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One brain-model server and one tiny policy folder for the training runs of this module."""
    folder = tmp_path_factory.mktemp("torchrun")
    (folder / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    save_tiny_policy(folder / "policy")
    with BrainServe(folder) as server:
        yield folder, server


def training_recipe(folder: Path, server: BrainServe, trainer: str, out: Path) -> Path:
    recipe = {
        "name": f"torchrun-{trainer}", "seed": 0, "output_dir": str(out), "trainer": trainer,
        "policy": {"model": str(folder / "policy"), "dtype": "float32"},
        "data": {"train": str(folder / "prompts.txt"), "heldout": str(folder / "prompts.txt")},
        # no disk cache, so every completion reaches the server; the tiny random policy writes characters of
        # any script, which the default voice would refuse (None): speak them, as this test is about serving
        "brain": {"speech": "espeak", "speech_kwargs": {"unspeakable": "speak"}, "model": "remote",
                  "model_kwargs": {"url": server.url, "timeout": 120}, "cache_dir": ""},
        "rewards": [{"path": str(ROOT / "rewards" / "broca.py")}],
        "sampling": {"max_new_tokens": 8},
        "eval": {"enabled": False},
        "logging": {"report_to": [], "progress": False},
    }
    if trainer == "grpo":  # log_completions: TRL writes every rank's gathered rewards to a parquet per step
        recipe["grpo"] = {"steps": STEPS, "prompts_per_step": 1, "num_generations": COMPLETIONS_PER_RANK,
                          "warmup_steps": 0, "extra": {"log_completions": True}}
    else:
        recipe["awsft"] = {"steps": STEPS, "prompts_per_step": 1, "completions_per_prompt": COMPLETIONS_PER_RANK,
                           "warmup_steps": 0}
        # a tracker, as the shipped recipes have: accelerate's end_training destroys the process group, so the
        # final synchronised save must come before it
        recipe["logging"]["report_to"] = ["tensorboard"]
    path = out.parent / f"{trainer}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def train_two_ranks(shared, trainer: str) -> tuple[Path, dict[str, dict[str, int]]]:
    """Run the recipe under torchrun; return the run folder and the server's counters of the new clients."""
    folder, server = shared
    out = folder / f"run_{trainer}"
    recipe = training_recipe(folder, server, trainer, out)
    before = server.health()["clients"]
    _, seconds = torchrun(["brainrl.train", "--recipe", str(recipe), "--threads", "1"], folder, RUN_TIMEOUT_S)
    print(f"\n[{trainer}] torchrun, 2 CPU ranks, {STEPS} steps, one brainrl serve: {seconds:.1f} s wall")
    clients = {k: v for k, v in server.health()["clients"].items() if k not in before}
    return out, clients


def assert_each_rank_was_served(clients: dict[str, dict[str, int]]) -> None:
    """Two new client processes, rank 0 and rank 1, each sent one request per step and one for the preflight
    reward check. A request carries each distinct text once (identical completions of the tiny policy in one
    batch are sent once), so a rank sends at most one item
    per completion plus one for the preflight's test batch; the trainers' checks below show no reward was lost."""
    assert sorted(name.rsplit("/", 1)[-1] for name in clients) == ["rank0", "rank1"], clients
    for name, counts in clients.items():
        assert counts["requests"] == STEPS + 1, (name, counts)
        assert STEPS + 1 <= counts["items"] <= STEPS * COMPLETIONS_PER_RANK + 1, (name, counts)


def assert_written_once(out: Path, card: dict) -> None:
    assert card["status"] == "finished"
    assert card["accelerate"]["num_processes"] == 2 and "MULTI_CPU" in card["accelerate"]["distributed_type"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".tmp-*"))


def test_grpo_two_ranks_share_one_brain_server(shared):
    import pandas as pd

    out, clients = train_two_ranks(shared, "grpo")
    assert_each_rank_was_served(clients)
    card = json.loads((out / "run_card.json").read_text())
    assert_written_once(out, card)
    steps = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, STEPS + 1))  # one line per step: only rank 0 logs
    for step in range(1, STEPS + 1):
        table = pd.read_parquet(out / "completions" / f"completions_{step:05d}.parquet")
        assert len(table) == 2 * COMPLETIONS_PER_RANK  # gathered from both ranks
        assert table["prompt"].astype(str).nunique() == 2  # each rank drew its own prompt
        rewards = table["broca_minus_global"].tolist()
        assert not any(r is None or math.isnan(r) for r in rewards), rewards  # no reward was None


def test_awsft_two_ranks_share_one_brain_server(shared):
    out, clients = train_two_ranks(shared, "awsft")
    assert_each_rank_was_served(clients)
    card = json.loads((out / "run_card.json").read_text())
    assert_written_once(out, card)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(m["rewards_failed"] == 0 and math.isfinite(m["reward_mean"]) for m in metrics)  # gathered over ranks
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{STEPS:06d}"]
    assert list(out.glob("logs/**/events.out.tfevents.*"))  # the tracker ran and was closed after the save
    assert len((out / "completions.jsonl").read_text().splitlines()) == STEPS * COMPLETIONS_PER_RANK  # rank 0's


def test_campaign_sharded_over_two_ranks_merges_every_item_once(tmp_path):
    from datasets import load_from_disk

    n_items, shard_size = 8, 2
    recipe = tmp_path / "campaign.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "torchrun-campaign", "out_dir": str(tmp_path / "camp"), "n_items": n_items, "seed": 3,
        "shard_size": shard_size, "batch_size": 2, "topics": ["weather", "sports"],
        "generator": {"name": "openai", "kwargs": {"model": "fake-chat", "base_url_env": "BRAINRL_TEST_LLM_BASE",
                                                   "api_key_env": "BRAINRL_TEST_LLM_KEY", "timeout_s": 30}},
        "pipeline": {"speech": "espeak", "model": "synthetic", "cache_dir": ""},
        "projection": {"k": 4}, "merge_wait_s": 240,
    }))
    with SeededChatServer() as llm:
        env = subprocess_env(BRAINRL_TEST_LLM_BASE=llm.base_url, BRAINRL_TEST_LLM_KEY="sk-test")
        _, seconds = torchrun(["brainrl", "simulate", "--recipe", str(recipe)], tmp_path, RUN_TIMEOUT_S, env)
    print(f"\n[campaign] torchrun, 2 CPU ranks, {n_items} items in {n_items // shard_size} shards: {seconds:.1f} s wall")
    camp = tmp_path / "camp"
    metas = [json.loads(p.read_text()) for p in sorted(camp.glob("shards/shard-*/brainrl_shard.json"))]
    assert [m["shard"] for m in metas] == [0, 1, 2, 3]
    assert all(m["rank"] == m["shard"] % 2 and m["world_size"] == 2 for m in metas)  # each rank wrote its own
    assert all(m["ids"] == list(range(m["shard"] * shard_size, (m["shard"] + 1) * shard_size)) for m in metas)
    dataset = load_from_disk(str(camp / "dataset"))
    assert sorted(dataset["id"]) == list(range(n_items)) and len(dataset) == n_items  # nothing lost or duplicated
    merge = json.loads((camp / "merge.json").read_text())
    assert merge["n_rows"] == n_items and merge["n_failed"] == 0
    # one LLM call per item (no item simulated by both ranks), and each stored block is the reply to its call
    assert len(llm.seeds) == len(set(llm.seeds)) == n_items
    replies = {tuple(line.split(". ", 1)[1] for line in headline_block(s).splitlines()) for s in llm.seeds}
    assert {tuple(h) for h in dataset["headlines"]} == replies
