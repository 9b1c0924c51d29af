"""Out-of-distribution scores for a posterior's inputs: how far a learned summary z = h(X) lies from the
summaries of the simulations the posterior was trained on.

A tuned generator drifts away from the simulator's text distribution, and a posterior decoding its maps
can then answer confidently and wrongly (field.md §0.5). Before a decoded θ is trusted, each item gets

- ``distance``: the Mahalanobis distance of its summary from the training summaries' mean, under a
  Ledoit-Wolf shrinkage covariance (summaries have ~128 dims and campaigns few items, so the sample
  covariance is singular without shrinkage);
- ``p_value``: the fraction of *reference* distances at least as large, ``(1 + #{ref >= d}) / (1 + n_ref)``.
  References are distances of items the mean/covariance were not fitted on (the posterior's held-out
  val/test ids, or K-fold cross-fitted distances), so an in-distribution item has a ~uniform p-value and
  ``p < threshold`` flags about a ``threshold`` fraction of in-distribution items by chance;
- ``flagged`` = ``p_value < threshold``, and ``factor`` in (0, 1], a weight that is 1 up to the reference
  (1 − threshold) quantile of distances and decays exponentially beyond it (scale: the reference std).

The fitted statistics are saved beside the posterior (``ood.npz`` + ``ood.json``) by ``fit_ood``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import versions

log = logging.getLogger(__name__)

OOD_FILE = "ood.npz"
OOD_META = "ood.json"
DEFAULT_THRESHOLD = 0.05


@dataclass
class OODScores:
    """Per-item scores of one batch (arrays of length n)."""

    distance: np.ndarray
    p_value: np.ndarray
    flagged: np.ndarray
    factor: np.ndarray
    threshold: float

    def __len__(self) -> int:
        return len(self.distance)

    def record(self, i: int) -> dict[str, Any]:
        return {"distance": float(self.distance[i]), "p_value": float(self.p_value[i]),
                "flagged": bool(self.flagged[i]), "factor": float(self.factor[i])}


def _shrinkage_fit(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, precision, shrinkage) of the rows of ``z`` with scikit-learn's Ledoit-Wolf estimator."""
    from sklearn.covariance import LedoitWolf

    if z.ndim != 2 or len(z) < 3:
        raise ValueError(f"OOD statistics need at least 3 summaries (n, d); got shape {z.shape}. "
                         "Fit them on a larger campaign.")
    lw = LedoitWolf(assume_centered=False).fit(z.astype(np.float64))
    return lw.location_, lw.get_precision(), float(lw.shrinkage_)


def _mahalanobis(z: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    d = np.asarray(z, np.float64) - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


@dataclass
class OODReference:
    """Fitted OOD statistics: mean and shrinkage precision of training summaries plus out-of-sample
    reference distances that calibrate p-values."""

    mean: np.ndarray  # (d,)
    precision: np.ndarray  # (d, d)
    reference: np.ndarray  # (n_ref,) sorted out-of-sample distances
    shrinkage: float
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, summaries: np.ndarray, reference_summaries: np.ndarray | None = None, folds: int = 5,
            seed: int = 0) -> "OODReference":
        """Fit on (n, d) ``summaries``. References: distances of ``reference_summaries`` (items not in
        ``summaries``) if given, else K-fold cross-fitted distances of ``summaries`` themselves."""
        z = np.asarray(summaries, np.float64)
        mean, precision, shrinkage = _shrinkage_fit(z)
        if reference_summaries is not None and len(reference_summaries):
            ref = _mahalanobis(np.asarray(reference_summaries, np.float64), mean, precision)
            how = {"reference": "held-out", "n_fit": len(z), "n_reference": len(ref)}
        else:
            folds = int(min(max(folds, 2), len(z)))
            order = np.random.default_rng(seed).permutation(len(z))
            ref = np.empty(len(z))
            for part in np.array_split(order, folds):
                rest = np.setdiff1d(order, part)
                m, p, _ = _shrinkage_fit(z[rest])
                ref[part] = _mahalanobis(z[part], m, p)
            how = {"reference": f"{folds}-fold cross-fitted", "n_fit": len(z), "n_reference": len(ref), "seed": seed}
        return cls(mean, precision, np.sort(ref), shrinkage, how)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def distance(self, summaries: np.ndarray) -> np.ndarray:
        z = np.asarray(summaries, np.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"summaries must be (n, {self.dim}) like the fitted ones; got {z.shape}.")
        return _mahalanobis(z, self.mean, self.precision)

    def p_values(self, distance: np.ndarray) -> np.ndarray:
        distance = np.asarray(distance, np.float64)
        n_ge = len(self.reference) - np.searchsorted(self.reference, distance, side="left")
        return (1.0 + n_ge) / (1.0 + len(self.reference))

    def cutoff(self, threshold: float) -> float:
        """The distance beyond which p < threshold (the reference (1 − threshold) quantile)."""
        return float(np.quantile(self.reference, 1.0 - threshold))

    def score(self, summaries: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> OODScores:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"ood_threshold is a p-value threshold in (0, 1); got {threshold}.")
        if threshold < 1.0 / (1.0 + len(self.reference)):
            log.warning("ood threshold %.3g is below the p-value resolution 1/(1+%d): nothing can be flagged; "
                        "fit the OOD statistics on more held-out items or raise the threshold",
                        threshold, len(self.reference))
        d = self.distance(summaries)
        p = self.p_values(d)
        scale = max(float(np.std(self.reference)), 1e-8)
        factor = np.exp(-np.maximum(d - self.cutoff(threshold), 0.0) / scale)
        return OODScores(d, p, p < threshold, factor, float(threshold))

    # -- storage ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{OOD_FILE}.tmp.npz"
        np.savez(tmp, mean=self.mean, precision=self.precision, reference=self.reference,
                 shrinkage=np.array(self.shrinkage))
        tmp.replace(folder / OOD_FILE)
        meta = {**self.meta, "dim": self.dim, "shrinkage": self.shrinkage,
                "reference_quantiles": {str(q): float(np.quantile(self.reference, q)) for q in (0.5, 0.9, 0.95, 0.99)},
                "method": "Mahalanobis distance of the posterior's learned summary under a Ledoit-Wolf covariance; "
                          "p-value = (1 + #{reference >= d}) / (1 + n_reference)"}
        (folder / OOD_META).write_text(json.dumps(meta, indent=1))
        return folder / OOD_FILE

    @classmethod
    def load(cls, folder: str | Path) -> "OODReference":
        folder = Path(folder)
        path = folder / OOD_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} has no OOD statistics ({OOD_FILE}). Compute them once from the posterior's training "
                f"campaign: `brainrl ood-fit --posterior {folder}` (add --data CAMPAIGN_DIR if the campaign moved).")
        meta = json.loads((folder / OOD_META).read_text()) if (folder / OOD_META).is_file() else {}
        with np.load(path) as f:
            return cls(f["mean"], f["precision"], f["reference"], float(f["shrinkage"]), meta)


def campaign_summaries(posterior: Any, arrays: dict[str, Any], batch_size: int = 256) -> np.ndarray:
    """Learned summaries of every campaign item (projected coefficients), in row order."""
    out = []
    for start in range(0, len(arrays["coeffs"]), batch_size):
        rows = slice(start, start + batch_size)
        out.append(posterior.summaries((arrays["coeffs"][rows], arrays["mask"][rows])))
    return np.concatenate(out)


def fit_ood(posterior: Any, arrays: dict[str, Any] | str | Path | None = None, out_dir: str | Path | None = None,
            folds: int = 5, seed: int = 0, posterior_dir: str | Path | None = None) -> OODReference:
    """Fit OOD statistics from the posterior's campaign and save them beside the posterior.

    ``posterior`` is a ``Posterior`` or its folder. ``arrays`` is ``load_campaign_arrays`` output, a
    campaign folder or a list of them (default: the campaign(s) recorded in the posterior's metadata). When the campaign is
    the one the posterior was fitted on, the mean/covariance are fitted on its training ids and the
    held-out (val + test) ids are the reference; otherwise K-fold cross-fitting over all items is used.
    """
    from brainrl.sbi.inference.estimator import EstimatorConfig, Posterior, campaign_rows, data_fingerprint

    if isinstance(posterior, (str, Path)):
        posterior_dir = Path(posterior)
        posterior = Posterior.load(posterior_dir)
    if arrays is None or isinstance(arrays, (str, Path, list, tuple)):  # folder(s): several for a multi-campaign fit
        from brainrl.sbi.simulation.campaign import combine_campaign_arrays

        campaign = arrays or posterior.meta.get("data", {}).get("dir")
        if not campaign:
            raise ValueError("the posterior's metadata names no campaign folder; pass the campaign (--data DIR).")
        arrays = combine_campaign_arrays([campaign] if isinstance(campaign, (str, Path)) else campaign)
    if posterior.projection.fingerprint() != arrays["projection"].fingerprint():
        raise ValueError("the campaign's projection differs from the posterior's; fit OOD statistics on the campaign "
                         "the posterior was trained on (its stored coefficients use the same basis).")
    z = campaign_summaries(posterior, arrays)
    ids = np.asarray(arrays["ids"])
    splits = posterior.meta.get("splits", {})
    same = posterior.meta.get("data", {}).get("fingerprint") == data_fingerprint(ids) and splits
    if same:
        known = set(EstimatorConfig.__dataclass_fields__)
        rows = campaign_rows(arrays, EstimatorConfig(**{k: v for k, v in posterior.meta.get("config", {}).items()
                                                        if k in known}))
        is_held = np.zeros(len(ids), bool)
        is_held[np.concatenate([rows["val"], rows["test"]])] = True
        reference = OODReference.fit(z[~is_held], z[is_held], folds, seed)
    else:
        reference = OODReference.fit(z, None, folds, seed)
    reference.meta.update({"n_items": int(len(ids)), "campaign_fingerprint": data_fingerprint(ids),
                           "projection": posterior.projection.fingerprint(), "versions": versions(("brainrl", "numpy",
                                                                                                    "scikit-learn")),
                           "fitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
    target = out_dir or posterior_dir
    if target is not None:
        reference.save(target)
    return reference


def summarize_scores(scores: OODScores | None, names: Sequence[str] = ()) -> dict[str, Any]:
    """JSON-able summary of a batch's OOD scores (fraction flagged, distance and p-value quantiles)."""
    if scores is None or len(scores) == 0:
        return {"n": 0}
    return {"n": len(scores), "threshold": scores.threshold, "fraction_flagged": float(np.mean(scores.flagged)),
            "n_flagged": int(np.sum(scores.flagged)), "distance_median": float(np.median(scores.distance)),
            "p_value_median": float(np.median(scores.p_value)), "factor_mean": float(np.mean(scores.factor))}
