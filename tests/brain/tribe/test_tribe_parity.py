"""`brainrl tribe parity` end to end against the tribev2 test double (the real-stack tier runs it on tribev2's
own code): JSON + plot, metrics that tell equal settings from different ones."""

import json

import numpy as np
import pytest

from brainrl.brain.base import BrainMap, Failed
from brainrl.brain.tribe.parity import comparison_settings, compare_maps, per_tr_r
from brainrl.cli.main import main
from brainrl.cortex.rois import resolve_mask

TEXTS = ["The storm rolled in over the harbour at dusk.", "She said it was fine; it was not.",
         "Numbers like 1969 appear here, with commas.", "A fourth text that runs a little longer than the others.",
         "Quiet rivers carve valleys grain by grain."]


def test_parity_metrics_tell_equal_from_different():
    rng = np.random.default_rng(0)
    base = [BrainMap(rng.normal(size=(3 + i % 2, 20484)).astype(np.float32)) for i in range(6)]
    same = compare_maps(base, base, {"broca": resolve_mask("broca")}, batch_size=3)
    assert same["per_tr_vertex_r"]["min"] > 0.999999 and same["roi_reward_r"]["broca"] > 0.999999
    assert same["rank_r_within_batch_mean"] == pytest.approx(1.0)
    noisy = [BrainMap(m.data + rng.normal(scale=2.0, size=m.data.shape).astype(np.float32)) for m in base]
    other = compare_maps(base, noisy[:5] + [Failed("boom")], {"broca": resolve_mask("broca")}, batch_size=3)
    assert other["per_tr_vertex_r"]["median"] < 0.6 and other["n_compared"] == 5
    assert other["failed"] == {"baseline": 0, "candidate": 1}
    r = per_tr_r(base[0].data, -base[0].data)
    assert np.allclose(r, -1.0)


def test_bf16_comparison_gives_mixed_precision_to_the_bf16_side_only():
    """float32_parts / matmul_precision describe a bf16 setting: the float32 baseline (true float32 products)
    would refuse float32_parts, so they go to the candidate alone; the configs they make are valid."""
    from brainrl.brain.tribe.config import TribeConfig

    base = {"device": "cpu", "float32_parts": ["text"], "matmul_precision": "high"}
    baseline, candidate = comparison_settings("bf16", base)
    assert "float32_parts" not in baseline.model_kwargs and baseline.model_kwargs["matmul_precision"] == "highest"
    assert candidate.model_kwargs["float32_parts"] == ["text"] and candidate.model_kwargs["matmul_precision"] == "high"
    assert "float32_parts" in candidate.label and base["float32_parts"] == ["text"]  # the caller's dict is untouched
    kwargs = {k: v for k, v in candidate.model_kwargs.items() if k != "speech_path"}
    assert TribeConfig(**kwargs).float32_parts == ("text",) and TribeConfig(**{**kwargs, "float32_parts": "text, fusion"}
                                                                           ).float32_parts == ("fusion", "text")
    TribeConfig(**{k: v for k, v in baseline.model_kwargs.items() if k != "speech_path"})


def test_brainrl_tribe_parity_writes_json_and_plot(tribe_double, tmp_path, checkpoint_dir):
    pytest.importorskip("espeakng_loader")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "parity"
    code = main(["tribe", "parity", "--texts", str(texts), "--batch-size", "5", "--out", str(out),
                 "--model-arg", f"checkpoint_dir={checkpoint_dir}", "--model-arg", "device=cpu",
                 "--model-arg", f"cache_folder={tmp_path / 'cache'}"])
    assert code == 0
    report = json.loads((out / "parity.json").read_text())
    assert (out / "parity.png").stat().st_size > 10_000
    one_pass, bf16 = report["comparisons"]["one-pass"], report["comparisons"]["bf16"]
    assert one_pass["n_compared"] == bf16["n_compared"] == len(TEXTS)
    # one-pass computes TRIBE's per-word features: equal up to float32 rounding
    assert one_pass["per_tr_vertex_r"]["min"] > 0.9999 and one_pass["max_abs_diff_relative"]["max"] < 1e-4
    # bf16 weights move the numbers, measurably but not beyond recognition
    assert 0.9 < bf16["per_tr_vertex_r"]["median"] < 1.0 and bf16["max_abs_diff_relative"]["max"] > 1e-4
    assert bf16["candidate_identity"]["dtype"] == "bfloat16" and bf16["baseline_identity"]["dtype"] == "float32"
    assert set(one_pass["roi_reward_r"]) == {"broca", "wernicke", "auditory", "stg", "v1", "language_left"}
