"""scripts/bench_sbi.py --generator-dtypes: the campaign recipe's own generator and writer, once per dtype on the
same requests. A tiny random Llama stands in for the embedded SmolLM2 (loading only); generation, the writer's
parsing and resampling, and the timing run for real."""

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import load_script


def test_generator_dtypes_bench_times_each_dtype_on_the_same_requests(monkeypatch):
    from brainrl.policy.tiny import tiny_policy
    from brainrl.sbi.simulation import generators

    loaded = []

    def tiny_local(model, device, dtype):
        loaded.append((model, dtype))
        policy, tokenizer = tiny_policy(seed=0)
        return policy.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]).eval(), tokenizer

    monkeypatch.setattr(generators, "_load_local", tiny_local)
    report = load_script("bench_sbi").bench_generator_dtypes(2, ["float32", "bfloat16"])
    assert loaded == [("smollm2", "float32"), ("smollm2", "bfloat16")]  # the recipe's model, each dtype asked for
    assert report["n_items"] == 2 and set(report["dtypes"]) == {"float32", "bfloat16"}
    fp32, bf16 = report["dtypes"]["float32"], report["dtypes"]["bfloat16"]
    assert fp32["seconds"] > 0 and bf16["seconds"] > 0
    # the ratio of the unrounded times: inside what the seconds, rounded to 0.01 s, allow (plus its own rounding)
    low = (fp32["seconds"] - 0.005) / (bf16["seconds"] + 0.005)
    high = (fp32["seconds"] + 0.005) / max(bf16["seconds"] - 0.005, 1e-9)
    assert low - 0.005 <= bf16["speedup_vs_float32"] <= high + 0.005
    assert 0 <= bf16["items_identical_to_float32"] <= 2 and 0 <= fp32["failed"] <= 2
