"""Smoke test of scripts/bench_tribe.py with tiny configs on CPU (the lead runs the real shapes on a GPU)."""

import json

import pytest

from tests.helpers import load_script


@pytest.mark.slow
def test_bench_runs_tiny_on_cpu(tmp_path):
    bench = load_script("bench_tribe")
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--tiny", "--batches", "1,2", "--words", "20", "--reps", "1",
                       "--reference-items", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    fast = result["ms_per_completion"]["fast"]
    assert set(fast) == {"1", "2"} and all(row["total"] > 0 for row in fast.values())
    assert result["ms_per_completion"]["reference"]["whisperx"] is None  # listed, not run
    text = result["text_features"]  # one-pass vs per-word, timed separately on the same texts
    assert text["per_word_ms_per_text"] > 0 and text["one_pass_batch2_ms_per_text"] > 0
    assert text["median_word_r"] > 0.999 and text["max_abs_diff"] < 1e-4
    assert text["per_word_tflop_per_text"] > text["one_pass_tflop_per_text"] > 0
