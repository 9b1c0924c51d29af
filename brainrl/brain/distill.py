"""Distillation: fit a ``Student`` to a teacher brain pipeline's maps, and measure its fidelity.

Steps (``distill``): the teacher pipeline predicts maps for the texts (its map cache serves every text
it has seen with the same speech and model identity; the rest are predicted); the maps are averaged over
frames and compressed by PCA (``k`` components, fitted on the training maps); the teacher's own speech
durations fix the student's speaking rate; a ridge head (one penalty per component, chosen by generalised
cross-validation) maps standardised text features to the PCA coefficients. Fidelity is always measured
against the teacher on held-out texts: for every preset ROI, Pearson r of the student's and the teacher's
ROI mean and selectivity (ROI − whole-cortex mean), and the agreement of their rankings within groups
(completions of one prompt, what a group-normalised advantage compares).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.brain.base import BrainMap
from brainrl.brain.student_features import FeatureConfig, feature_names, features_matrix, fit_speaking_rate
from brainrl.brain.surrogate import Student
from brainrl.provenance import versions

log = logging.getLogger(__name__)

DISTILL_PACKAGES = ("brainrl", "numpy", "scikit-learn", "scipy", "tokenizers", "sentence-transformers", "torch")
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 4, 15))


@dataclass
class DistillConfig:
    """How a student is fitted (recorded in its card)."""

    k: int = 64
    encoder: str = "static"
    #: principal directions kept of each embedding block (word vectors, sentence embedding); 0 = all
    embedding_dims: int = 16
    #: map PCA: keep the fewest components (at most k) that explain this share of the training maps' variance
    variance: float = 0.99999
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    fit_rate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k (PCA components) must be >= 1, got {self.k}.")
        if not 0 < self.variance <= 1:
            raise ValueError(f"variance must lie in (0, 1], got {self.variance}.")
        if self.embedding_dims < 0:
            raise ValueError(f"embedding_dims must be >= 0, got {self.embedding_dims}.")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError("alphas must be a non-empty list of positive ridge penalties.")
        FeatureConfig(encoder=self.encoder)  # validates the encoder name


@dataclass
class TeacherData:
    """Texts with the teacher's time-averaged maps; ``failures`` are (text, reason) the teacher could not map."""

    texts: list[str]
    maps: np.ndarray  # (N, 20,484) float32, frame means
    seconds: list[float]  # speech duration per text (the teacher's ``audio_seconds``), NaN if unknown
    groups: list[Any] = field(default_factory=list)  # e.g. the prompt of each completion
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.texts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def teacher_maps(texts: Sequence[str], pipeline: Callable[[Sequence[str]], list], groups: Sequence[Any] | None = None,
                 batch_size: int = 32, progress: bool = False) -> TeacherData:
    """The teacher's time-averaged maps for ``texts`` through ``pipeline`` (a ``BrainPipeline``), in
    batches; texts it cannot map are left out and listed with the reason."""
    groups = list(groups) if groups is not None else list(range(len(texts)))
    if len(groups) != len(texts):
        raise ValueError(f"{len(groups)} groups for {len(texts)} texts.")
    kept, maps, seconds, kept_groups, failures = [], [], [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc="teacher maps", unit="text")
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start:start + batch_size])
        for text, group, prediction in zip(chunk, groups[start:start + batch_size], pipeline(chunk)):
            if isinstance(prediction, BrainMap):
                kept.append(text)
                maps.append(prediction.data.mean(axis=0, dtype=np.float64).astype(np.float32))
                seconds.append(float(prediction.provenance.get("stimulus", prediction.provenance).get(
                    "audio_seconds", math.nan)))
                kept_groups.append(group)
            else:
                failures.append((text, getattr(prediction, "reason", str(prediction))))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    array = np.stack(maps) if maps else np.zeros((0, 20484), np.float32)
    return TeacherData(kept, array, seconds, kept_groups, failures)


# --------------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------------
def pca_basis(maps: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (V,), components (k, V) orthonormal, explained variance ratio (k,)) of ``maps`` (N, V)."""
    from sklearn.utils.extmath import randomized_svd

    mean = maps.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = maps - mean
    k = int(min(k, max(len(maps) - 1, 1)))
    _, s, vt = randomized_svd(centred, n_components=k, n_iter=6, random_state=seed)
    total = float((centred.astype(np.float64) ** 2).sum())
    ratio = (s.astype(np.float64) ** 2) / total if total > 0 else np.zeros(k)
    return mean, vt.astype(np.float32), ratio


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


def ridge_solve(z: np.ndarray, c: np.ndarray, alphas: np.ndarray, weights: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge per target column j with penalty ``alphas[j]``: (coef (D, k), intercept (k,))."""
    w = np.ones(len(z)) if weights is None else np.asarray(weights, dtype=np.float64)
    wn = w / w.sum()
    z_mean, c_mean = wn @ z, wn @ c
    zc, cc = (z - z_mean) * np.sqrt(w)[:, None], (c - c_mean) * np.sqrt(w)[:, None]
    evals, evecs = np.linalg.eigh(zc.T @ zc)
    projected = evecs.T @ (zc.T @ cc)  # (D, k)
    coef = evecs @ (projected / (evals[:, None] + np.asarray(alphas)[None, :]))
    return coef, c_mean - z_mean @ coef


def embedding_reducer(x: np.ndarray, names: Sequence[str], dims: int) -> np.ndarray:
    """(D_raw, D) matrix: lexical columns kept as they are, each embedding block (``hrf_sem_*``,
    ``sentence_*``) projected onto its ``dims`` leading principal directions in ``x``."""
    blocks = {prefix: [i for i, n in enumerate(names) if n.startswith(prefix)] for prefix in ("hrf_sem_", "sentence_")}
    embedded = {i for cols in blocks.values() for i in cols}
    kept = [i for i in range(len(names)) if i not in embedded]
    parts = [np.eye(len(names))[:, kept]]
    for cols in blocks.values():
        if not cols:
            continue
        if dims == 0 or dims >= len(cols):
            parts.append(np.eye(len(names))[:, cols])
            continue
        block = x[:, cols] - x[:, cols].mean(axis=0)
        directions = np.linalg.svd(block, full_matrices=False)[2][:dims]  # (dims, len(cols))
        projection = np.zeros((len(names), dims))
        projection[cols] = directions.T
        parts.append(projection)
    return np.hstack(parts)


def fit_head(x: np.ndarray, c: np.ndarray, alphas: Sequence[float]) -> dict[str, np.ndarray]:
    """Standardise ``x``, choose one ridge penalty per target by GCV (sklearn ``RidgeCV``), fit."""
    from sklearn.linear_model import RidgeCV

    x_mean, x_scale = standardise(x)
    z = (x - x_mean) / x_scale
    cv = RidgeCV(alphas=np.asarray(alphas), alpha_per_target=True).fit(z, c)
    alpha = np.broadcast_to(np.asarray(cv.alpha_, dtype=np.float64), (c.shape[1],)).copy()
    return {"x_mean": x_mean, "x_scale": x_scale, "coef": np.asarray(cv.coef_, dtype=np.float64).T.copy(),
            "intercept": np.asarray(cv.intercept_, dtype=np.float64), "alpha": alpha}


def fit_student(train: TeacherData, config: DistillConfig, card: dict[str, Any] | None = None) -> Student:
    """A ``Student`` fitted to ``train`` (features, PCA of the maps, ridge head)."""
    if len(train) < 10:
        raise ValueError(f"Distillation needs at least 10 teacher maps, got {len(train)}; give more texts.")
    features = FeatureConfig(encoder=config.encoder)
    rate_fit: dict[str, Any] = {"fitted": False}
    if config.fit_rate:
        rate, rate_fit = fit_speaking_rate(train.texts, train.seconds)
        features = FeatureConfig(encoder=config.encoder, rate=rate)
    x = features_matrix(train.texts, features)
    reducer = embedding_reducer(x, feature_names(features), config.embedding_dims)
    mean, components, ratio = pca_basis(train.maps, config.k, config.seed)
    keep = min(len(ratio), int(np.searchsorted(np.cumsum(ratio), config.variance)) + 1)
    components, ratio = components[:keep], ratio[:keep]
    c = (train.maps - mean) @ components.T
    head = fit_head(x @ reducer, c.astype(np.float64), config.alphas)
    card = dict(card or {})
    card.setdefault("fit", {}).update({
        "pca_explained_variance": float(ratio.sum()), "pca_k": int(components.shape[0]),
        "speaking_rate_fit": rate_fit, "alpha_range": [float(head["alpha"].min()), float(head["alpha"].max())],
        "config": {**asdict(config), "alphas": list(config.alphas)},
    })
    return Student(features=features, reducer=reducer, components=components, map_mean=mean,
                   train_x=x.astype(np.float32),
                   train_c=c.astype(np.float32), card=card, **head)


def refit_student(student: Student, texts: Sequence[str], mean_maps: np.ndarray, weight: float = 4.0) -> Student:
    """The student refitted on its training pairs plus fresh (text, teacher map) pairs weighted ``weight``
    each (same features, standardisation, PCA basis and penalties): how an audit follows a drifting policy."""
    if len(texts) != len(mean_maps):
        raise ValueError(f"{len(texts)} texts for {len(mean_maps)} maps.")
    new_x = features_matrix(texts, student.features)
    x = np.vstack([student.train_x.astype(np.float64), new_x])
    c = np.vstack([student.train_c.astype(np.float64), student.project(mean_maps).astype(np.float64)])
    weights = np.concatenate([np.ones(len(student.train_x)), np.full(len(new_x), float(weight))])
    z = (x @ student.reducer - student.x_mean) / student.x_scale
    coef, intercept = ridge_solve(z, c, student.alpha, weights)
    card = {**student.card, "refit": {"base_student": student.card.get("student_sha256"),
                                      "fresh_pairs": len(texts), "fresh_weight": weight,
                                      "refits": int(student.card.get("refit", {}).get("refits", 0)) + 1}}
    return Student(features=student.features, reducer=student.reducer, x_mean=student.x_mean,
                   x_scale=student.x_scale, coef=coef,
                   intercept=intercept, components=student.components, map_mean=student.map_mean,
                   alpha=student.alpha, train_x=x.astype(np.float32), train_c=c.astype(np.float32), card=card)


# --------------------------------------------------------------------------------------------------
# fidelity
# --------------------------------------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import pearsonr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(pearsonr(a, b)[0])


def rank_agreement(student: Sequence[float], teacher: Sequence[float], groups: Sequence[Any]) -> dict[str, float]:
    """Agreement of the two orderings within each group: mean Spearman rho over groups of >= 3 and the
    share of concordant pairs over all within-group pairs whose teacher values differ."""
    from scipy.stats import spearmanr

    s, t = np.asarray(student, float), np.asarray(teacher, float)
    g = np.asarray([str(x) for x in groups])
    rhos, concordant, pairs = [], 0, 0
    for key in np.unique(g):
        idx = np.flatnonzero(g == key)
        if len(idx) >= 3 and np.std(s[idx]) > 0 and np.std(t[idx]) > 0:
            rhos.append(float(spearmanr(s[idx], t[idx])[0]))
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                dt = t[idx[a]] - t[idx[b]]
                if dt == 0:
                    continue
                pairs += 1
                concordant += int(np.sign(s[idx[a]] - s[idx[b]]) == np.sign(dt))
    return {"within_group_spearman": float(np.mean(rhos)) if rhos else float("nan"),
            "concordant_pairs": concordant / pairs if pairs else float("nan"), "pairs": pairs}


def roi_table(maps: np.ndarray, rois: Sequence[str]) -> dict[str, np.ndarray]:
    """ROI means and selectivities (ROI − cortex mean, medial wall excluded, as ``ROIReward``) of
    time-averaged maps (N, V): arrays (N, len(rois)), and the cortex mean (N,)."""
    from brainrl.cortex.stats import averaging_matrix

    weights = averaging_matrix(list(rois) + ["global"])
    means = np.asarray(maps, np.float64) @ weights
    return {"mean": means[:, :-1], "selectivity": means[:, :-1] - means[:, -1:], "global": means[:, -1]}


def fidelity(student: Student, data: TeacherData, rois: Sequence[str] | None = None) -> dict[str, Any]:
    """Student vs teacher on ``data`` (held-out): per ROI r of means and selectivities, within-group rank
    agreement, map-level correlation, and the share of teacher variance the PCA basis keeps."""
    from brainrl.cortex.rois import list_rois

    rois = list(rois) if rois is not None else list_rois()
    predicted = student.predict_maps(data.texts)
    teacher, mine = roi_table(data.maps, rois), roi_table(predicted, rois)
    ceiling = roi_table(student.maps(student.project(data.maps)), rois)  # the PCA basis alone
    per_roi = {}
    for j, name in enumerate(rois):
        row = {}
        for stat in ("mean", "selectivity"):
            t, s = teacher[stat][:, j], mine[stat][:, j]
            row[stat] = {"r": pearson(s, t), "rmse": float(np.sqrt(np.mean((s - t) ** 2))),
                         "teacher_sd": float(np.std(t)), "pca_ceiling_r": pearson(ceiling[stat][:, j], t),
                         **rank_agreement(s, t, data.groups)}
        per_roi[name] = row
    centred_t = data.maps - data.maps.mean(axis=1, keepdims=True)
    centred_s = predicted - predicted.mean(axis=1, keepdims=True)
    map_r = (centred_t * centred_s).sum(1) / np.sqrt((centred_t ** 2).sum(1) * (centred_s ** 2).sum(1) + 1e-30)
    return {"n": len(data), "rois": per_roi, "global_mean_r": pearson(mine["global"], teacher["global"]),
            "map_r_median": float(np.median(map_r)), "map_r_min": float(np.min(map_r))}


def fidelity_summary(report: dict[str, Any], roi: str = "broca", stat: str = "selectivity") -> str:
    row = report["rois"][roi][stat]
    return (f"{roi} {stat}: r = {row['r']:.3f} (within-group Spearman {row['within_group_spearman']:.3f}, "
            f"n = {report['n']})")


def distill(train: TeacherData, heldout: TeacherData, config: DistillConfig, *, teacher: dict[str, Any],
            data: dict[str, Any], out_dir, rois: Sequence[str] | None = None) -> tuple[Student, dict[str, Any]]:
    """Fit on ``train``, measure on ``heldout`` (both the teacher's maps), save with a card; returns
    (student, card). ``teacher`` holds ``pipeline`` (PipelineConfig fields) and ``identity``."""
    started = time.perf_counter()
    card = {"teacher": teacher, "data": {**data, "train": {"n": len(train), "texts_sha256": train.digest(),
                                                             "teacher_failures": len(train.failures)},
                                          "heldout": {"n": len(heldout), "texts_sha256": heldout.digest(),
                                                      "teacher_failures": len(heldout.failures)}},
            "seeds": {"seed": config.seed}, "versions": versions(DISTILL_PACKAGES),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    student = fit_student(train, config, card)
    fit_s = time.perf_counter() - started
    report = fidelity(student, heldout, rois) if len(heldout) >= 3 else {"n": len(heldout), "rois": {}}
    student.card["heldout_fidelity"] = report
    student.card["fit"]["seconds"] = fit_s
    student.save(out_dir)
    return student, student.card
