"""Calibration: are the ranks of the true θ under the posterior uniform? BayesFlow's log γ statistic, and
the check its rank-ECDF figure makes by eye: does the ECDF of the fractional ranks stay inside the 95%
simultaneous bands? The two are the same kind of test (Säilynoja et al.) on different evaluation grids
(log γ: the S + 1 discrete rank values; the figure: N points for N cases), so at the margin they can
disagree; both are reported."""

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


def ecdf_band_excursion(draws: np.ndarray, theta: np.ndarray, names: Sequence[str], seed: int = 0,
                        confidence: float = 0.95) -> dict[str, float]:
    """Per dimension, how far the ECDF of the fractional ranks leaves BayesFlow's simultaneous
    ``confidence`` band (``calibration_ecdf``'s figure): 0.0 = inside everywhere."""
    from brainrl.sbi.inference.estimator import import_bayesflow

    import_bayesflow()
    from bayesflow.utils.ecdf import simultaneous_ecdf_bands

    draws = np.asarray(draws)
    below = np.sum(draws < np.asarray(theta)[:, None, :], axis=1)
    # the rank spread uniformly over its step (randomised PIT): with S draws the fractional rank has an atom
    # at 0 and 1 that a continuous band, evaluated at z ≈ 0 and 1, would count as an excursion
    ranks = (below + np.random.default_rng(seed).uniform(size=below.shape)) / (draws.shape[1] + 1)
    state = np.random.get_state()
    np.random.seed(seed)  # the band is simulated with numpy's global generator
    try:
        _, z, lower, upper = simultaneous_ecdf_bands(len(ranks), confidence=confidence)
    finally:
        np.random.set_state(state)
    out = {}
    for j, name in enumerate(names):
        ecdf = np.mean(ranks[:, j][:, None] <= z[None, :], axis=0)
        out[name] = float(max(0.0, np.max(lower - ecdf), np.max(ecdf - upper)))
    return out
