"""Recovery: how well point estimates and posterior means track the true θ, with Bayes RMSE (it charges
the posterior spread), contraction against the prior and the cross-correlation of the estimated dimensions
(entanglement)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brainrl.report.stats import pearson
from brainrl.sbi.diagnostics.calibration import calibration_log_gamma, ecdf_band_excursion
from brainrl.sbi.simulation.prior import PARAM_NAMES, PRIOR_VARIANCE


def cross_correlation(estimates: np.ndarray) -> np.ndarray:
    """6×6 Pearson correlation between the estimated dimensions across cases (≈ identity if disentangled,
    since the prior is independent)."""
    estimates = np.asarray(estimates, dtype=float)
    if len(estimates) < 3:
        return np.full((estimates.shape[1],) * 2, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(estimates, rowvar=False)


def point_metrics(estimates: np.ndarray, theta: np.ndarray, names: Sequence[str] = PARAM_NAMES) -> dict[str, Any]:
    """Metrics of point estimates (n, 6) against the true θ (n, 6). A point estimate has no spread, so its
    Bayes RMSE equals its RMSE."""
    estimates, theta = np.asarray(estimates, float), np.asarray(theta, float)
    if estimates.shape != theta.shape:
        raise ValueError(f"estimates {estimates.shape} and theta {theta.shape} must have the same shape.")
    rmse = np.sqrt(np.mean((estimates - theta) ** 2, axis=0))
    cross = cross_correlation(estimates)
    off = cross[~np.eye(len(names), dtype=bool)]
    return {
        "n_cases": int(len(theta)),
        "pearson_r": {n: pearson(estimates[:, j], theta[:, j]) for j, n in enumerate(names)},
        "rmse": {n: float(rmse[j]) for j, n in enumerate(names)},
        "bayes_rmse": {n: float(rmse[j]) for j, n in enumerate(names)},
        "cross_correlation": cross.tolist(),
        "mean_abs_off_diagonal": float(np.nanmean(np.abs(off))) if off.size else float("nan"),
    }


def posterior_metrics(draws: np.ndarray, theta: np.ndarray, names: Sequence[str] = PARAM_NAMES,
                      seed: int = 0) -> dict[str, Any]:
    """Metrics of posterior draws (n, S, 6): point metrics of the posterior mean, plus
    Bayes RMSE = sqrt(mean over cases of E_q[(θ̃ − θ)²]) (it charges the posterior spread),
    contraction = 1 − mean posterior variance / prior variance (1/12 for U(0, 1)), and
    calibration log γ (BayesFlow; < 0 rejects uniform ranks at 5%)."""
    draws, theta = np.asarray(draws, float), np.asarray(theta, float)
    if draws.ndim != 3 or draws.shape[0] != theta.shape[0] or draws.shape[2] != theta.shape[1]:
        raise ValueError(f"draws must be (n, S, {theta.shape[1]}) for theta {theta.shape}; got {draws.shape}.")
    out = point_metrics(draws.mean(axis=1), theta, names)
    bayes = np.sqrt(np.mean((draws - theta[:, None, :]) ** 2, axis=(0, 1)))
    out["bayes_rmse"] = {n: float(bayes[j]) for j, n in enumerate(names)}
    post_var = draws.var(axis=1).mean(axis=0)
    out["posterior_contraction"] = {n: float(1 - post_var[j] / PRIOR_VARIANCE) for j, n in enumerate(names)}
    out["posterior_sd"] = {n: float(np.sqrt(post_var[j])) for j, n in enumerate(names)}
    out["calibration_log_gamma"] = calibration_log_gamma(draws, theta, names, seed)
    out["ecdf_band_excursion"] = ecdf_band_excursion(draws, theta, names, seed)
    return out
