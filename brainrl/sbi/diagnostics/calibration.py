"""Calibration: are the ranks of the true θ under the posterior uniform? BayesFlow's log γ statistic."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def calibration_log_gamma(draws: np.ndarray, theta: np.ndarray, names: Sequence[str], seed: int = 0) -> dict[str, float]:
    from brainrl.sbi.inference.estimator import import_bayesflow

    bf = import_bayesflow()
    state = np.random.get_state()
    np.random.seed(seed)  # its null distribution is simulated with numpy's global generator
    try:
        values = bf.diagnostics.metrics.calibration_log_gamma(draws, theta)["values"]
    finally:
        np.random.set_state(state)
    return {n: float(v) for n, v in zip(names, np.asarray(values).ravel())}
