"""The diagnostics' figures: BayesFlow's recovery and calibration-ECDF plots, point recovery of a text-only
baseline, cross-correlation of the estimates and Pearson r per dimension.

Figures of our own are drawn the report's way (``brainrl.report.figures``: a ``Figure`` on its own Agg
canvas, no pyplot state); BayesFlow's diagnostics return pyplot figures, which ``save_bayesflow`` writes
and closes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.report.figures import new_figure, save_figure
from brainrl.report.stats import pearson
from brainrl.sbi.simulation.prior import PARAM_NAMES

DPI = 110


def save_bayesflow(figure, path: Path) -> str:
    """Write a figure that a ``bayesflow.diagnostics`` plot returned and close it (BayesFlow draws through
    pyplot, whose figures stay open until closed). Returns the file name, as every plot here does."""
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path.name


def plot_posterior(draws: np.ndarray, theta: np.ndarray, out_dir: Path, names: Sequence[str] = PARAM_NAMES) -> dict[str, str]:
    """BayesFlow's recovery and calibration-ECDF (95% simultaneous bands) figures."""
    from brainrl.sbi.inference.estimator import import_bayesflow

    bf = import_bayesflow()
    return {
        "recovery": save_bayesflow(bf.diagnostics.recovery(draws, theta, variable_names=list(names)),
                                   out_dir / "sbi_recovery.png"),
        "calibration_ecdf": save_bayesflow(bf.diagnostics.calibration_ecdf(draws, theta, variable_names=list(names),
                                                                           difference=True),
                                           out_dir / "sbi_calibration_ecdf.png"),
    }


def plot_point_recovery(estimates: np.ndarray, theta: np.ndarray, path: Path, title: str,
                        names: Sequence[str] = PARAM_NAMES) -> str:
    fig = new_figure(3 * len(names), 3)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for j, (ax, name) in enumerate(zip(axes, names)):
        ax.scatter(theta[:, j], estimates[:, j], s=8, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nr = {pearson(estimates[:, j], theta[:, j]):.2f}",
               xlabel="true θ")
    axes[0].set_ylabel("estimate")
    fig.suptitle(title)
    return save_figure(fig, path, DPI).name


def plot_cross_correlations(matrices: dict[str, np.ndarray], path: Path, names: Sequence[str] = PARAM_NAMES) -> str:
    fig = new_figure(4.5 * len(matrices), 4)
    axes = np.atleast_1d(fig.subplots(1, len(matrices), squeeze=False)[0])
    for ax, (label, matrix) in zip(axes, matrices.items()):
        im = ax.imshow(np.asarray(matrix, float), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), title=f"{label}: estimate cross-correlation")
        ax.set_xticklabels([n[:4] for n in names], rotation=45)
        ax.set_yticklabels([n[:4] for n in names])
        for (a, b), v in np.ndenumerate(np.asarray(matrix, float)):
            ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8)
    return save_figure(fig, path, DPI).name


def plot_r_comparison(results: dict[str, dict[str, Any]], path: Path, names: Sequence[str] = PARAM_NAMES) -> str:
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    width = 0.8 / max(len(results), 1)
    for i, (label, metrics) in enumerate(results.items()):
        ax.bar(np.arange(len(names)) + i * width, [metrics["pearson_r"][n] for n in names], width, label=label)
    ax.set(xticks=np.arange(len(names)) + width * (len(results) - 1) / 2, ylabel="Pearson r (posterior mean / score)",
           ylim=(-0.2, 1), title="Recovery of θ per dimension")
    ax.set_xticklabels(names, rotation=20)
    ax.axhline(0, color="k", lw=0.8)
    ax.legend()
    return save_figure(fig, path, DPI).name
