"""scripts/theta_tables.py: the text judge's spread/slope table against hand-computed values."""

import numpy as np
import pytest

from tests.helpers import load_script

NAMES = ["valence", "arousal"]


def _module():
    return load_script("theta_tables")


def test_spread_table_shrunk_estimates_halve_sd_and_slope():
    theta = np.array([[0.1, 0.9], [0.3, 0.7], [0.7, 0.3], [0.9, 0.1]])
    follows = theta.copy()                       # slope 1, SD of θ* (0.316...), mean |θ̂ − 0.5| 0.3
    shrunk = 0.5 + 0.5 * (theta - 0.5)           # slope 0.5, half the SD, mean |θ̂ − 0.5| 0.15
    table = _module().spread_table({"base": follows, "tuned": shrunk}, {"base": theta, "tuned": theta}, NAMES)
    base_row, tuned_row = table.splitlines()[2:4]
    sd = theta[:, 0].std()
    assert base_row == f"| base | {sd:.3f} · +1.000 | {sd:.3f} · +1.000 | {sd:.3f} | 0.300 |"
    assert tuned_row == f"| tuned | {sd / 2:.3f} · +0.500 | {sd / 2:.3f} · +0.500 | {sd / 2:.3f} | 0.150 |"


def test_spread_table_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one estimate and one θ\\* per completion"):
        _module().spread_table({"base": np.zeros((3, 2))}, {"base": np.zeros((4, 2))}, NAMES)
