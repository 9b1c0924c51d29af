"""scripts/theta_reward_combine.py: weighted sums of saved candidate rewards, scored by best-of-group."""

import sys

import numpy as np
import pytest

from tests.helpers import load_script


def _module():
    return load_script("theta_reward_combine")


def test_parse_combo_reads_weights_and_keys_with_spaces():
    parse = _module().parse_combo
    assert parse("1*both/all six/mean/log + 0.5*procedural/valence+arousal+dominance/mean/downweight") == \
        [(1.0, "both/all six/mean/log"), (0.5, "procedural/valence+arousal+dominance/mean/downweight")]
    assert parse("form") == [(1.0, "form")]


def _scores(tmp_path):
    """Four prompts × two completions: judge distance 0 for completion 0 and -1 for completion 1 of every group;
    reward `a` ranks completion 0 first, `b` ranks completion 1 first by a larger margin."""
    group = np.repeat(np.arange(4), 2)
    judge = np.tile([0.0, -1.0], 4)
    a = np.tile([0.0, -0.1], 4)
    b = np.tile([-1.0, 0.0], 4)
    path = tmp_path / "scores.npz"
    np.savez(path, group=group, theta=np.full((8, 6), 0.5), judge_disjoint=judge, judge_text=judge,
             judge_disjoint_mean=np.full((8, 6), 0.5), judge_text_estimate=np.full((8, 6), 0.5), a=a, b=b)
    return path


def test_sum_picks_by_the_weighted_total(tmp_path, monkeypatch, capsys):
    path = _scores(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x", str(path), "--combo", "1*a", "--combo", "1*a + 1*b",
                                      "--combo", "1*a + 0.05*b"])
    _module().main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 1*a")]
    gains = [float(line.split("|")[3].split()[0]) for line in rows]
    # a alone picks the judge's best (gain +0.5 over the group mean); a + b picks the worst (-0.5);
    # a + 0.05·b still picks the best (0 - 0.05 > -0.1 + 0)
    assert gains == pytest.approx([0.5, -0.5, 0.5], abs=1e-9)


def test_unknown_key_fails_naming_it(tmp_path, monkeypatch):
    path = _scores(tmp_path)
    monkeypatch.setattr(sys, "argv", ["x", str(path), "--combo", "1*missing"])
    with pytest.raises(SystemExit, match="'missing' is not in"):
        _module().main()
