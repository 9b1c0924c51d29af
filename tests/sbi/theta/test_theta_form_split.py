"""scripts/theta_form_split.py: a validation's outputs split by form, each judge summarised per form class."""

import numpy as np
import pytest

from tests.helpers import load_script


def _module():
    return load_script("theta_form_split")


def test_form_classes():
    m = _module()
    assert not m.is_multiline("One headline about rain") and not m.is_multiline("Rain\n\n")
    assert m.is_multiline("Rain falls\n\nI think so") and m.is_multiline("1. a\n2. b")
    assert m.at_limit(32, 32) and not m.at_limit(31, 32)


def _rows():
    """Two prompts; per prompt and model one one-line and one multi-line completion. θ* = 0.9 everywhere; the
    judge reads one-line completions exactly (0.9) and multi-line ones as the prior's centre (0.5), except the
    tuned model's one-line answers, which it reads at 0.8."""
    rows, est = [], []
    for prompt in (0, 1):
        for model in ("base", "tuned"):
            rows.append({"model": model, "prompt_id": prompt, "theta_target": [0.9] * 6, "completion": "A headline"})
            est.append([0.9 if model == "base" else 0.8] * 6)
            rows.append({"model": model, "prompt_id": prompt, "theta_target": [0.9] * 6, "completion": "A\nB"})
            est.append([0.5] * 6)
    return rows, np.array(est)


def test_split_table_summarises_each_form_and_the_paired_difference():
    m = _module()
    rows, est = _rows()
    n_tokens = np.array([10, 32] * 4)
    table = m.split_table(rows, {"judge": est}, n_tokens, 32, ood_distance=np.arange(8.0), flagged=np.zeros(8, bool))
    assert table["counts"]["base"]["one line"] == 2 and table["counts"]["tuned"]["several lines"] == 2
    base = table["judges"]["judge"]["base"]
    assert base["one line"]["distance"] == pytest.approx(0.0, abs=1e-12)
    assert base["several lines"]["distance"] == pytest.approx(-6 * 0.16, abs=1e-12)
    assert base["several lines"]["abs_from_centre"] == pytest.approx(0.0, abs=1e-12)
    assert base["one line"]["abs_from_centre"] == pytest.approx(0.4, abs=1e-12)
    assert "ood_distance_median" not in base["all"]  # OOD only for the second posterior
    diffs = table["tuned_minus_base"]["judge"]
    # one-line: tuned 0.8 vs base 0.9 -> -6 * 0.01 per prompt; several lines: identical -> 0; < 3 prompts -> None
    assert diffs["one line"] is None
    table = m.split_table(rows * 2, {"second_posterior": np.vstack([est, est])}, np.tile(n_tokens, 2), 32,
                          ood_distance=np.arange(16.0), flagged=np.arange(16) % 2 == 0)
    assert table["judges"]["second_posterior"]["base"]["all"]["ood_flagged"] == pytest.approx(0.5)
    assert table["judges"]["second_posterior"]["base"]["at token limit"]["n"] == 4


def test_paired_difference_over_prompts():
    m = _module()
    model = np.array(["base", "tuned"] * 4)
    prompt = np.repeat(np.arange(4), 2)
    distance = np.array([-1.0, -0.5, -1.0, -0.4, -1.0, -0.6, -1.0, -0.5])
    out = m.paired_form_difference(distance, model, prompt, np.ones(8, bool))
    assert out["mean"] == pytest.approx(0.5, abs=1e-12) and out["n_prompts"] == 4
    assert out["ci_low"] < 0.5 < out["ci_high"]
    assert m.paired_form_difference(distance, model, prompt, model == "base") is None  # no tuned rows
