"""The synthetic reference brain model: a deterministic encoding model whose ground truth is known.

SYNTHETIC STAND-IN, NOT A MODEL OF REAL BRAINS. It exists so that every other part of brainrl (speech,
caching, rewards, training, SBI) can run and be tested end to end offline, like an SBI benchmark task
with a known simulator. Real word timings and audio from the speech engine, real text features (word
length, WordPiece counts, a dependency-free syntactic load, MiniLM embeddings) and a canonical
haemodynamic response drive fixed, spatially smooth loadings on the fsaverage5 sphere:

    map[t, v] = sum_c frames[t, c] * loading[c, v]  (+ optional deterministic noise)
    frames    = F_T @ grid_features   (HRF, +5 s offset, 2 Hz -> 1 frame/s; features.frame_matrix)

The documented ROI sensitivities (docs/synthetic-model.md): the left-lateralised language network
follows syntactic and lexical load, bilateral auditory cortex follows the speech envelope, a weak global
component follows speech presence, and semantic embeddings project through smooth random maps over
association cortex.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import N_VERTICES, N_VERTICES_HEMI, BrainMap, BrainModel, Failed, Prediction
from brainrl.brain.features import (
    GRID_HZ,
    HAEMODYNAMIC_OFFSET_S,
    TEXT_FEATURE_KINDS,
    audio_envelope,
    frame_matrix,
    n_frames_for,
    place_on_grid,
    speech_presence,
    word_bins,
    word_features,
)
from brainrl.provenance import content_hash
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)

#: Bump whenever any output of the model changes for the same (seed, settings, stimulus).
SYNTHETIC_MODEL_VERSION = 2  # 2: word length and rarity saturate (MAX_WORD_LETTERS, MAX_EXTRA_PIECES)
SYNTHETIC_NOTE = "synthetic stand-in, not a model of real brains"

# Destrieux labels behind the documented sensitivities
IFG_LABELS = ("G_front_inf-Opercular", "G_front_inf-Triangul")
TEMPORAL_LANGUAGE_LABELS = ("S_temporal_sup", "G_temp_sup-Lateral")
AUDITORY_LABELS = ("G_temp_sup-G_T_transv", "S_temporal_transverse", "G_temp_sup-Plan_tempo")
PRIMARY_LABELS = AUDITORY_LABELS + (
    "G_precentral", "G_postcentral", "S_central", "S_calcarine", "G_cuneus", "Pole_occipital",
)
NON_CORTEX_LABELS = ("Unknown", "Medial_wall")

#: right-hemisphere homologue weight of the language network (left-lateralised)
RIGHT_LANGUAGE_WEIGHT = 0.35

# fixed sensitivities: channel -> (global, IFG, temporal language, auditory) weights
#: Lexical load saturates, as real responses do: without a cap a single URL-like "word" (dozens of
#: letters and WordPieces, spelled out for seconds) outscored any sentence.
MAX_WORD_LETTERS = 15
MAX_EXTRA_PIECES = 3.0

CHANNELS = ("presence", "envelope", "word_length", "wordpieces", "syntax")
_ROI_WEIGHTS = {
    #             global  IFG   temporal-language  auditory
    "presence": (0.30, 0.00, 0.00, 0.00),
    "envelope": (0.00, 0.00, 0.30, 1.00),
    "word_length": (0.10, 0.40, 0.60, 0.00),
    "wordpieces": (0.00, 0.40, 0.60, 0.00),
    "syntax": (0.00, 1.00, 0.50, 0.00),
}
SEMANTIC_AMPLITUDE = 0.3  # peak of each semantic map before association weighting
SEED_JITTER = 0.05  # amplitude of the per-seed smooth perturbation of every fixed loading
SMOOTHING_ITERATIONS = 4


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings that change outputs (all go into ``identity()`` and cache keys)."""

    seed: int = 0
    noise_std: float = 0.0
    text_features: str = "minilm-static"
    semantic_dims: int = 32

    def __post_init__(self) -> None:
        if self.text_features not in TEXT_FEATURE_KINDS:
            raise ValueError(
                f"text_features={self.text_features!r} is not known; use one of {', '.join(TEXT_FEATURE_KINDS)}."
            )
        if not (isinstance(self.semantic_dims, int) and 1 <= self.semantic_dims <= 384):
            raise ValueError(f"semantic_dims must be an int in [1, 384], got {self.semantic_dims!r}.")
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}.")


class SyntheticBrainModel(BrainModel):
    """Deterministic synthetic encoding model on fsaverage5 (a stand-in, not a model of real brains).

    Same (seed, settings, stimulus text, speech engine and version) -> bit-identical maps, whatever else
    is in the batch: each stimulus is computed on its own arrays, whose shapes depend on it alone.
    """

    name = "synthetic"

    def __init__(self, seed: int = 0, noise_std: float = 0.0, text_features: str = "minilm-static",
                 semantic_dims: int = 32):
        self.settings = SyntheticConfig(seed=seed, noise_std=float(noise_std), text_features=text_features,
                                          semantic_dims=semantic_dims)
        self._loadings: SpatialLoadings | None = None

    @property
    def seed(self) -> int:
        return self.settings.seed

    def __getstate__(self) -> dict[str, Any]:
        # loadings are rebuilt (identically, from the seed) in the receiving process: small pickles
        return {"settings": self.settings, "_loadings": None}

    def identity(self) -> dict[str, Any]:
        return {
            "model": "synthetic",
            "version": SYNTHETIC_MODEL_VERSION,
            **asdict(self.settings),
            "grid_hz": GRID_HZ,
            "haemodynamic_offset_s": HAEMODYNAMIC_OFFSET_S,
            "synthetic": True,
        }

    @property
    def loadings(self) -> "SpatialLoadings":
        if self._loadings is None:
            self._loadings = spatial_loadings(self.settings.seed, self.settings.semantic_dims)
        return self._loadings

    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        if isinstance(stimuli, Stimulus):
            raise TypeError("predict() takes a sequence of stimuli; wrap a single one in a list.")
        from brainrl import __version__

        identity = self.identity()
        out: list[Prediction] = []
        for stim in stimuli:
            if not isinstance(stim, Stimulus):
                raise TypeError(f"predict() expects brainrl.stimulus.Stimulus items, got {type(stim).__name__}.")
            problem = _check_stimulus(stim)
            if not problem:
                try:
                    waveform = stim.load_waveform()
                except Exception as err:  # missing or unreadable audio loses this item only
                    problem = (f"cannot read the stimulus audio ({type(err).__name__}: {err}); "
                               "keep the waveform or audio file")
            if not problem:
                problem = _check_audio(stim, waveform)
            if problem:
                log.warning("synthetic model cannot predict stimulus %s: %s", stim.key()[:12], problem)
                out.append(Failed(problem))
                continue
            data = self._predict_one(stim, waveform)
            provenance = {
                "model": "synthetic",
                "model_version": SYNTHETIC_MODEL_VERSION,
                "seed": self.settings.seed,
                "model_identity": identity,
                **stim.provenance(),
                "stimulus_key": stim.key(),
                "brainrl_version": __version__,
                "synthetic": True,
                "note": SYNTHETIC_NOTE,
            }
            out.append(BrainMap(data=data, provenance=provenance))
        return out

    # -- internals ------------------------------------------------------------------------------
    def grid_features(self, stim: Stimulus, waveform: np.ndarray | None = None) -> np.ndarray:
        """(2T, C) features on the 2 Hz grid, columns in the order of ``SpatialLoadings.channels``.

        T follows the audio itself (samples / sample rate), not the stimulus's ``duration`` field, so a
        stimulus that claims more seconds than it holds costs no more than its audio."""
        wave = stim.load_waveform() if waveform is None else waveform
        n_frames = n_frames_for(len(wave) / stim.sample_rate)
        n_bins = GRID_HZ * n_frames
        wf = word_features(stim, self.settings.text_features)
        first, count = word_bins(stim.words, n_bins)
        semantic = self.loadings.project_semantic(wf.semantic)
        word_level = np.column_stack([np.minimum(wf.letters, MAX_WORD_LETTERS) / 5.0,
                                      np.clip(wf.wordpieces - 1.0, 0.0, MAX_EXTRA_PIECES), wf.syntactic, semantic])
        placed = place_on_grid(first, count, word_level, n_bins)
        presence = speech_presence(first, count, n_bins)
        envelope = audio_envelope(wave, stim.sample_rate, n_bins)
        return np.column_stack([presence, envelope, placed])

    def _predict_one(self, stim: Stimulus, waveform: np.ndarray) -> np.ndarray:
        features = self.grid_features(stim, waveform)
        n_frames = features.shape[0] // GRID_HZ
        frames = (frame_matrix(n_frames) @ features).astype(np.float32)
        data = frames @ self.loadings.matrix
        if self.settings.noise_std > 0:
            data += self._noise(stim, n_frames)
        return data

    def _noise(self, stim: Stimulus, n_frames: int) -> np.ndarray:
        """Deterministic noise per (seed, stimulus): half spatially smooth, half white, std noise_std."""
        digest = content_hash({"seed": self.settings.seed, "stimulus": stim.key(), "purpose": "noise"}, length=16)
        rng = np.random.default_rng(int(digest, 16))
        basis = self.loadings.noise_basis
        smooth = rng.standard_normal((n_frames, basis.shape[0]), dtype=np.float32) @ basis
        white = rng.standard_normal((n_frames, N_VERTICES), dtype=np.float32)
        return (self.settings.noise_std * math.sqrt(0.5)) * (smooth + white)


def _check_stimulus(stim: Stimulus) -> str:
    if not (stim.duration > 0 and math.isfinite(stim.duration)):
        return f"stimulus duration must be a positive number of seconds, got {stim.duration!r}"
    if not (isinstance(stim.sample_rate, (int, np.integer)) and stim.sample_rate > 0):
        return f"stimulus sample_rate must be a positive integer, got {stim.sample_rate!r}"
    return ""


def _check_audio(stim: Stimulus, waveform: np.ndarray) -> str:
    """The audio decides the stimulus's length; ``duration`` is only checked against it."""
    seconds = len(waveform) / stim.sample_rate
    if seconds <= 0:
        return "the stimulus audio is empty"
    if abs(seconds - stim.duration) > max(0.05, 0.01 * seconds):
        log.warning("stimulus %s says %.3f s but its audio lasts %.3f s; using the audio", stim.key()[:12],
                    stim.duration, seconds)
    return ""


# --------------------------------------------------------------------------------------------------
# spatial loadings
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpatialLoadings:
    """Fixed per seed: ``matrix`` (C, 20,484) float32 with rows for ``channels``, the semantic
    projection (384 -> K) and a smooth basis for noise."""

    channels: tuple[str, ...]
    matrix: np.ndarray
    semantic_projection: np.ndarray  # (384, K)
    noise_basis: np.ndarray  # (16, 20,484), rows of unit RMS
    roi_weights: dict[str, np.ndarray]  # the smoothed ROI weight maps, for docs and tests

    def project_semantic(self, vectors: np.ndarray) -> np.ndarray:
        """Unit-normalise each word vector (zero stays zero) and project it to K dims."""
        norms = np.sqrt((vectors * vectors).sum(axis=1, keepdims=True))
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return unit @ self.semantic_projection


@functools.lru_cache(maxsize=1)
def _mesh_geometry() -> tuple[np.ndarray, "object"]:
    """Unit sphere coordinates (20,484, 3) and a row-normalised vertex-neighbour operator."""
    import scipy.sparse as sp

    from brainrl.cortex.atlas import load_mesh, sphere_coordinates

    coords = sphere_coordinates()
    mesh = load_mesh("sphere")
    rows, cols = [], []
    for offset, hemi in ((0, "left"), (N_VERTICES_HEMI, "right")):
        faces = np.asarray(mesh.parts[hemi].faces, dtype=np.int64) + offset
        for a, b in ((0, 1), (1, 2), (2, 0)):
            rows += [faces[:, a], faces[:, b]]
            cols += [faces[:, b], faces[:, a]]
    r, c = np.concatenate(rows), np.concatenate(cols)
    adjacency = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(N_VERTICES, N_VERTICES)).tocsr()
    adjacency.data[:] = 1.0  # duplicates from shared edges count once
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    neighbour_mean = sp.diags(1.0 / np.maximum(degree, 1.0)) @ adjacency
    return coords, neighbour_mean.tocsr()


def smooth_on_mesh(values: np.ndarray, iterations: int = SMOOTHING_ITERATIONS) -> np.ndarray:
    """Soften a map by repeatedly averaging each vertex with the mean of its mesh neighbours."""
    _, neighbour_mean = _mesh_geometry()
    out = np.asarray(values, dtype=np.float64)
    for _ in range(iterations):
        out = 0.5 * out + 0.5 * (neighbour_mean @ out)
    return out


def von_mises_bumps(rng: np.random.Generator, n_maps: int, n_bumps: int = 8,
                    kappa: tuple[float, float] = (4.0, 12.0)) -> np.ndarray:
    """(n_maps, 20,484) smooth random maps: signed sums of von-Mises bumps exp(k (u . mu - 1)) placed
    on a random hemisphere's sphere; each map scaled to a peak |value| of 1."""
    coords, _ = _mesh_geometry()
    maps = np.zeros((n_maps, N_VERTICES))
    for m in range(n_maps):
        for _ in range(n_bumps):
            centre = rng.standard_normal(3)
            centre /= np.linalg.norm(centre)
            k = rng.uniform(*kappa)
            amplitude = rng.standard_normal()
            hemi = slice(0, N_VERTICES_HEMI) if rng.random() < 0.5 else slice(N_VERTICES_HEMI, N_VERTICES)
            maps[m, hemi] += amplitude * np.exp(k * (coords[hemi] @ centre - 1.0))
        maps[m] /= max(np.abs(maps[m]).max(), 1e-12)
    return maps


def roi_weight_maps() -> dict[str, np.ndarray]:
    """The smoothed sensitivity regions (seed-independent), each (20,484,) in [0, 1]."""
    from brainrl.cortex import load_destrieux

    atlas = load_destrieux()
    cortex = 1.0 - atlas.mask(NON_CORTEX_LABELS, "both")
    ifg = atlas.mask(IFG_LABELS, "left") + RIGHT_LANGUAGE_WEIGHT * atlas.mask(IFG_LABELS, "right")
    temporal = atlas.mask(TEMPORAL_LANGUAGE_LABELS, "left") + RIGHT_LANGUAGE_WEIGHT * atlas.mask(
        TEMPORAL_LANGUAGE_LABELS, "right")
    auditory = atlas.mask(AUDITORY_LABELS, "both").astype(np.float64)
    association = 1.0 - 0.75 * atlas.mask(PRIMARY_LABELS, "both")
    out = {
        "global": 0.2 + 0.8 * cortex,  # medial wall / unknown carry a fifth of the global signal
        "ifg": smooth_on_mesh(ifg),
        "temporal_language": smooth_on_mesh(temporal),
        "auditory": smooth_on_mesh(auditory),
        "association": smooth_on_mesh(association * cortex),
    }
    return out


@functools.lru_cache(maxsize=4)
def spatial_loadings(seed: int, semantic_dims: int) -> SpatialLoadings:
    """All loadings of one seed; computed once per process per (seed, K)."""
    rng = np.random.default_rng([seed, 0x5EED])
    roi = roi_weight_maps()
    rows = []
    jitter = von_mises_bumps(rng, len(CHANNELS))
    for i, channel in enumerate(CHANNELS):
        g, ifg, temporal, auditory = _ROI_WEIGHTS[channel]
        row = g * roi["global"] + ifg * roi["ifg"] + temporal * roi["temporal_language"] + auditory * roi["auditory"]
        rows.append(row + SEED_JITTER * jitter[i] * roi["global"])
    semantic_maps = SEMANTIC_AMPLITUDE * von_mises_bumps(rng, semantic_dims) * roi["association"]
    # orthonormal 384 -> K projection, scaled so a unit word vector gives a K-vector of norm ~1
    q, _ = np.linalg.qr(rng.standard_normal((384, semantic_dims)))
    projection = q * math.sqrt(384.0 / semantic_dims)
    noise = von_mises_bumps(rng, 16, n_bumps=6)
    noise /= np.sqrt((noise ** 2).mean(axis=1, keepdims=True))
    matrix = np.vstack(rows + [semantic_maps]).astype(np.float32)
    channels = tuple(CHANNELS) + tuple(f"semantic_{k}" for k in range(semantic_dims))
    for arr in (matrix, projection):
        arr.setflags(write=False)
    return SpatialLoadings(channels=channels, matrix=matrix, semantic_projection=projection,
                           noise_basis=(noise / math.sqrt(16)).astype(np.float32), roi_weights=roi)
