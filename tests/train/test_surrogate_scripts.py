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
import surrogate_agreement  # noqa: E402
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


def test_gain_ratio_pools_seed_pairs_and_sums_stage_times(tmp_path, capsys):
    prompts = [f"p{i}" for i in range(10)]
    write_eval(tmp_path / "t0", {p: [0.4, 0.6] for p in prompts})  # gain 0.5
    write_eval(tmp_path / "t1", {p: [0.2, 0.4] for p in prompts})  # gain 0.3
    write_eval(tmp_path / "s0", {p: [0.4, 0.4] for p in prompts})  # gain 0.4
    write_eval(tmp_path / "s1", {p: [0.3, 0.3] for p in prompts})  # gain 0.3
    for run, reward_s in (("t0", 1.0), ("s0", 0.1)):
        rows = [{"step": k, "generation_s": 2.0, "reward_s": reward_s, "update_s": 3.0, "step_s": 5.0 + reward_s}
                for k in (1, 2, 2)]  # step 2 logged twice (a resumed run): counted once
        (tmp_path / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s0" / "audit.jsonl").write_text(json.dumps({"step": 1, "teacher_s": 0.05, "action": "refit"}) + "\n")
    out = tmp_path / "ratio.json"
    assert surrogate_gain_ratio.main(["--teacher", str(tmp_path / "t0"), str(tmp_path / "t1"), "--student",
                                      str(tmp_path / "s0"), str(tmp_path / "s1"), "--bootstrap", "200",
                                      "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    # pooled: teacher (0.5 + 0.3) / 2 = 0.4, student (0.4 + 0.3) / 2 = 0.35
    assert result["teacher_gain"] == pytest.approx(0.4, abs=1e-9) and result["ratio"] == pytest.approx(0.875, abs=1e-9)
    assert result["difference"] == pytest.approx(-0.05, abs=1e-9)
    assert [p["ratio"] for p in result["pairs"]] == pytest.approx([0.8, 1.0], abs=1e-9)
    stages = result["pairs"][0]["stage_s"]
    assert stages["teacher"]["steps"] == 2 and stages["teacher"]["reward_s"] == pytest.approx(2.0)
    assert stages["student_over_teacher"]["reward_s"] == pytest.approx(0.1)
    assert stages["student"]["audit_teacher_s"] == pytest.approx(0.05) and stages["student"]["audit_actions"] == {"refit": 1}
    assert "stage_s" not in result["pairs"][1]  # no metrics: no stage times
    with pytest.raises(SystemExit, match="pairs"):
        surrogate_gain_ratio.main(["--teacher", str(tmp_path / "t0"), "--student", str(tmp_path / "s0"),
                                   str(tmp_path / "s1")])


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


def test_agreement_by_step_blocks_on_a_runs_completions(tmp_path):
    from tests.brain.surrogate_helpers import distilled, varied_texts

    folder, _ = distilled()
    texts = varied_texts(12, seed=9)
    rows = [{"step": 1 + i // 4, "prompt": f"p{(i // 2) % 2}", "completion": t} for i, t in enumerate(texts)]
    rows.append({"step": 3, "prompt": "p0", "completion": "\U0001f3cd\U0001f3ce"})  # the teacher cannot speak it
    run = tmp_path / "run"
    run.mkdir()
    (run / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "agreement.json"
    assert surrogate_agreement.main(["--student", str(folder), "--runs", str(run), "--block", "2",
                                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())["runs"][str(run)]
    assert list(result["blocks"]) == ["1-2", "3-3"]
    assert result["all"]["n"] == 12 and result["blocks"]["1-2"]["n"] == 8 and result["blocks"]["3-3"]["n"] == 4
    assert result["all"]["r"] > 0.8 and 0.5 < result["all"]["concordant"] <= 1.0
