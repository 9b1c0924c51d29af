"""The distilled surrogate brain model: a student that predicts a teacher's time-averaged map from text.

A ``Student`` (fitted by ``brainrl distill``, brainrl/brain/distill.py) maps cheap text features
(brainrl/brain/student_features.py) through a ridge head to the teacher's maps compressed by PCA:

    map(text) = map_mean + (((features(text) @ reducer) - x_mean) / x_scale @ coef + intercept) @ components

``reducer`` keeps the lexical columns and projects each embedding block (384 word-vector dimensions) onto
its leading principal directions in the training texts, so a few hundred texts fit a well-posed head.

It is saved as a folder: ``student.npz`` (arrays, including its training features and PCA coefficients
so an audit can refit it) and ``card.json`` (teacher identity and pipeline, data, held-out fidelity,
seeds, versions). ``SurrogateBrainModel`` (registered as ``surrogate``) serves it wherever a brain model
goes (``brain: {speech: text-only, model: surrogate, model_kwargs: {path: DIR}, cache_dir: ""}``): each
prediction is a one-frame map of the predicted time-average, so every reward that averages over frames
(ROI means, selectivities, contrasts) reads the same number it would from the teacher's full map. The
map is held as its PCA coefficients (``brainrl.brain.lowrank.LowRankMap``): ROI rewards read region
means from them without building the 20,484 vertices, which are built on first use of ``.data`` for
rewards that read the whole map. Rewards that read time courses need the teacher.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import N_VERTICES, BrainModel, Failed, Prediction
from brainrl.brain.lowrank import LowRankMap, MapBasis
from brainrl.brain.student_features import FeatureConfig, feature_names, sentence_embeddings, static_features
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)

#: 2: word-level and count features are clipped to the training range widened by ``CLIP_MARGIN``
SURROGATE_VERSION = 2
#: share of each feature's training range a prediction may reach beyond it (see ``Student``)
CLIP_MARGIN = 0.25
STUDENT_FILE = "student.npz"
CARD_FILE = "card.json"
NOTE = "distilled surrogate: predicts the teacher's time-averaged map from text; check its card's fidelity"


@dataclass
class Student:
    """Features -> reduced -> standardised -> ridge -> PCA coefficients -> time-averaged map (float32).

    The lexical and count features (everything but the embedding blocks) are clipped to the range of the
    training features widened by ``CLIP_MARGIN`` of it on each side: a linear head extrapolates without
    limit, so one garbled 40-letter token (its mean letters and WordPieces far beyond any training text)
    read as a huge reward the teacher, whose word values saturate, did not give (held-out r 0.85 with one
    such text among 96, 0.96 clipped); the margin keeps the extrapolation a drifting policy needs
    (agreement on a 12-step run's completions unchanged). Refits widen the range with the audited texts.
    """

    features: FeatureConfig
    reducer: np.ndarray  # (D_raw, D) linear map from raw features to the head's inputs
    x_mean: np.ndarray  # (D,)
    x_scale: np.ndarray  # (D,)
    coef: np.ndarray  # (D, k)
    intercept: np.ndarray  # (k,)
    components: np.ndarray  # (k, 20,484) float32, orthonormal rows
    map_mean: np.ndarray  # (20,484,) float32
    alpha: np.ndarray  # (k,) ridge penalty per component, on standardised features
    train_x: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, D) raw features
    train_c: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, k) teacher coefficients
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d, k = self.coef.shape
        if self.reducer.ndim != 2 or self.reducer.shape[1] != d:
            raise ValueError(f"Student reducer must be (raw features, {d}); got {self.reducer.shape}.")
        self.alpha = np.broadcast_to(np.asarray(self.alpha, np.float64), (k,)).copy()
        if self.x_mean.shape != (d,) or self.x_scale.shape != (d,) or self.intercept.shape != (k,):
            raise ValueError(f"Student arrays disagree: coef {self.coef.shape}, x_mean {self.x_mean.shape}, "
                             f"x_scale {self.x_scale.shape}, intercept {self.intercept.shape}.")
        if self.components.shape != (k, N_VERTICES) or self.map_mean.shape != (N_VERTICES,):
            raise ValueError(f"Student components must be ({k}, {N_VERTICES}) and map_mean ({N_VERTICES},); got "
                             f"{self.components.shape} and {self.map_mean.shape}.")
        self.components = np.ascontiguousarray(self.components, dtype=np.float32)
        self.map_mean = np.ascontiguousarray(self.map_mean, dtype=np.float32)
        self.basis = MapBasis(self.map_mean, self.components)
        # folded once: coefficients straight from raw features (one matmul per batch)
        self._w = (self.reducer @ (self.coef / self.x_scale[:, None])).astype(np.float64)
        self._b = (self.intercept - (self.x_mean / self.x_scale) @ self.coef).astype(np.float64)
        # the fast path: word vectors pre-multiplied by their rows of _w (k numbers per word, kept per word)
        names = feature_names(self.features)
        if self._w.shape[0] != len(names):
            raise ValueError(f"Student expects {self._w.shape[0]} features; its feature config gives {len(names)}.")
        semantic = [i for i, name in enumerate(names) if name.startswith("hrf_sem_")]
        self._n_lexical = semantic[0]
        self._w_words = np.ascontiguousarray(self._w[semantic])
        self._w_other = np.delete(self._w, semantic, axis=0)
        self._clip_cols = np.array([i for i, name in enumerate(names) if not name.startswith(("hrf_sem_", "sentence_"))])
        self._low = self._high = None
        if self.train_x.ndim == 2 and self.train_x.shape[0] and self.train_x.shape[1] == len(names):
            seen = self.train_x[:, self._clip_cols].astype(np.float64)
            low, high = seen.min(axis=0), seen.max(axis=0)
            self._low, self._high = low - CLIP_MARGIN * (high - low), high + CLIP_MARGIN * (high - low)
        self._key = hashlib.sha256(self._w_words.tobytes()).hexdigest()[:16]

    @property
    def k(self) -> int:
        return int(self.coef.shape[1])

    def coefficients(self, x: np.ndarray) -> np.ndarray:
        """(B, k) PCA coefficients from raw features (B, D)."""
        if self._low is not None:
            x = np.array(x, dtype=np.float64)
            x[:, self._clip_cols] = np.clip(x[:, self._clip_cols], self._low, self._high)
        return x @ self._w + self._b

    def predict_coefficients(self, texts: Sequence[str]) -> np.ndarray:
        """``coefficients(features_matrix(texts))`` without forming the 384 word-vector sums."""
        x = static_features(texts, self.features, self._w_words, self._key)
        k, lex = self.k, self._n_lexical
        other = np.hstack([x[:, :lex], x[:, lex + k:]])
        if self._low is not None:  # the static non-embedding columns, in the order of _clip_cols
            other = np.clip(other, self._low, self._high)
        if self.features.encoder == "sentence":
            other = np.hstack([other, sentence_embeddings(texts)])
        return other @ self._w_other + x[:, lex:lex + k] + self._b

    def maps(self, coefficients: np.ndarray) -> np.ndarray:
        """(B, 20,484) float32 maps from PCA coefficients."""
        return self.basis.maps(coefficients)

    def predict_maps(self, texts: Sequence[str]) -> np.ndarray:
        return self.maps(self.predict_coefficients(texts))

    def project(self, mean_maps: np.ndarray) -> np.ndarray:
        """PCA coefficients of (B, 20,484) time-averaged maps (how a teacher map is encoded)."""
        return (np.asarray(mean_maps, dtype=np.float32) - self.map_mean) @ self.components.T

    # -- persistence ------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {"reducer": self.reducer, "x_mean": self.x_mean, "x_scale": self.x_scale, "coef": self.coef,
                "intercept": self.intercept,
                "components": self.components, "map_mean": self.map_mean, "alpha": np.asarray(self.alpha, np.float64),
                "train_x": self.train_x.astype(np.float32), "train_c": self.train_c.astype(np.float32)}

    def save(self, folder: str | Path, card: dict[str, Any] | None = None) -> str:
        """Write ``student.npz`` and ``card.json`` atomically; returns the student's sha256 (its identity)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        self.card = {**(card if card is not None else self.card), "student_sha256": digest,
                     "features": self.features.to_dict(), "surrogate_version": SURROGATE_VERSION,
                     "k": self.k, "n_features": int(self.coef.shape[0])}
        for name, payload in ((STUDENT_FILE, data),
                              (CARD_FILE, json.dumps(self.card, indent=2, default=str).encode("utf-8"))):
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(payload)
            os.replace(tmp, folder / name)
        return digest

    @classmethod
    def load(cls, folder: str | Path) -> "Student":
        folder = Path(folder)
        npz, card_path = folder / STUDENT_FILE, folder / CARD_FILE
        if not npz.exists() or not card_path.exists():
            raise FileNotFoundError(
                f"No distilled student in {str(folder)!r} (needs {STUDENT_FILE} and {CARD_FILE}). Make one with "
                f"`brainrl distill --recipe RECIPE --out {folder}` (docs/surrogate.md).")
        card = json.loads(card_path.read_text(encoding="utf-8"))
        digest = hashlib.sha256(npz.read_bytes()).hexdigest()
        if card.get("student_sha256") != digest:
            raise ValueError(f"{npz} does not match its card (sha256 {digest[:12]} vs "
                             f"{str(card.get('student_sha256'))[:12]}): the folder was edited by hand; distil again.")
        with np.load(npz, allow_pickle=False) as arrays:
            a = {name: arrays[name] for name in arrays.files}
        return cls(features=FeatureConfig.from_dict(card["features"]), reducer=a["reducer"], x_mean=a["x_mean"],
                   x_scale=a["x_scale"],
                   coef=a["coef"], intercept=a["intercept"], components=a["components"], map_mean=a["map_mean"],
                   alpha=np.asarray(a["alpha"], np.float64), train_x=a["train_x"], train_c=a["train_c"], card=card)


def teacher_pipeline_dict(folder: str | Path) -> dict[str, Any]:
    """The teacher's ``PipelineConfig`` fields recorded in a student's card."""
    card_path = Path(folder) / CARD_FILE
    if not card_path.exists():
        raise FileNotFoundError(f"No student card at {card_path}; distil a student first (docs/surrogate.md).")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    return dict(card["teacher"]["pipeline"])


def teacher_config(config):
    """``config`` itself, or for a surrogate pipeline the teacher pipeline it was distilled from (held-out
    evaluations and audits always score with the teacher)."""
    from brainrl.brain.pipeline import PipelineConfig

    if getattr(config, "model", None) != "surrogate":
        return config
    path = (config.model_kwargs or {}).get("path")
    if not path:
        raise ValueError("brain.model is 'surrogate' but brain.model_kwargs has no 'path' to the distilled student.")
    return PipelineConfig(**teacher_pipeline_dict(path))


class SurrogateBrainModel(BrainModel):
    """Serves a distilled ``Student``: one frame per stimulus, the predicted time-averaged map.

    ``path``: the folder ``brainrl distill --out`` wrote. Reads only ``Stimulus.text``, so pair it with the
    ``text-only`` speech engine to skip speech synthesis (any engine gives the same maps).
    """

    name = "surrogate"

    def __init__(self, path: str | os.PathLike, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.path = Path(path)
        self.batch_size = batch_size
        self.student = Student.load(self.path)
        self.refits = 0
        self._identity = self._make_identity()

    def _make_identity(self) -> dict[str, Any]:
        card = self.student.card
        # the student's hash fixes everything it predicts (its card names the teacher it was fitted to)
        return {"model": "surrogate", "version": SURROGATE_VERSION, "student_sha256": card["student_sha256"],
                "teacher_model": card.get("teacher", {}).get("identity", {}).get("model"), "refits": self.refits}

    def identity(self) -> dict[str, Any]:
        return self._identity

    def replace_student(self, student: Student) -> None:
        """Swap in a refitted student (audited training); the identity, hence every cache key, changes."""
        if not student.card.get("student_sha256"):
            raise ValueError("Save the refitted student first (Student.save) so it has an identity.")
        self.student = student
        self.refits += 1
        self._identity = self._make_identity()

    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        if isinstance(stimuli, Stimulus):
            raise TypeError("predict() takes a sequence of stimuli; wrap a single one in a list.")
        out: list[Prediction] = []
        for start in range(0, len(stimuli), self.batch_size):
            batch = list(stimuli[start:start + self.batch_size])
            texts = []
            for stim in batch:
                if not isinstance(stim, Stimulus):
                    raise TypeError(f"predict() expects brainrl.stimulus.Stimulus items, got {type(stim).__name__}.")
                texts.append(stim.text)
            coefficients = self.student.predict_coefficients(texts)
            finite = np.isfinite(coefficients).all(axis=1)
            for stim, row, ok in zip(batch, coefficients, finite):
                if not ok:
                    out.append(Failed("surrogate predicted non-finite values (features out of range)"))
                    continue
                provenance = {"model": "surrogate", "model_identity": self._identity, "time_averaged": True,
                              "note": NOTE, **stim.provenance()}
                # held as its PCA coefficients: ROI rewards read region means from them, `.data` builds the map
                out.append(LowRankMap(row, self.student.basis, provenance=provenance))
        return out
