"""scripts/surrogate_gain_ratio.py (gain ratio with a prompt bootstrap) and scripts/bench_surrogate.py (a
small side-by-side run on the test student)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_surrogate  # noqa: E402
import surrogate_gain_ratio  # noqa: E402


def write_eval(folder: Path, gains: dict[str, list[float]]) -> None:
    folder.mkdir(parents=True)
    rows = [{"prompt": p, "broca_minus_global": {"base": 1.0, "tuned": 1.0 + g}} for p, gs in gains.items() for g in gs]
    (folder / "eval_completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_gain_ratio_and_interval(tmp_path, capsys):
    rng = np.random.default_rng(0)
    teacher = {f"p{i}": list(0.2 + 0.05 * rng.standard_normal(2)) for i in range(12)}
    student = {p: [0.5 * g for g in gs] for p, gs in teacher.items()}  # exactly half the gain, prompt by prompt
    write_eval(tmp_path / "t", teacher)
    write_eval(tmp_path / "s", student)
    assert surrogate_gain_ratio.main(["--teacher", str(tmp_path / "t"), "--student", str(tmp_path / "s"),
                                      "--bootstrap", "500"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompts"] == 12 and result["ratio"] == pytest.approx(0.5, abs=1e-9)
    assert result["ratio_ci"] == pytest.approx([0.5, 0.5], abs=1e-9)
    assert result["teacher_gain_ci"][0] < result["teacher_gain"] < result["teacher_gain_ci"][1]


def test_bench_runs_side_by_side_on_the_test_student(tmp_path):
    from tests.brain.surrogate_helpers import distilled, varied_texts

    folder, _ = distilled()
    student = tmp_path / "student"
    import shutil

    shutil.copytree(folder, student)
    rows = [{"fingerprint": "x"}] + [{"prompt": "p", "text": t} for t in varied_texts(8, seed=4)]
    (student / "texts_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "bench.json"
    assert bench_surrogate.main(["--student", str(student), "--texts", "8", "--rounds", "1", "--student-repeats", "2",
                                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["teacher"]["median_ms"] > 0 and result["student"]["median_ms"] > 0
    assert result["agreement_r"] > 0.8 and result["teacher"]["pipeline"]["model"] == "synthetic"
