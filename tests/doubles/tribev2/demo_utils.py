"""Double of ``tribev2.demo_utils``: ``TribeModel`` and ``get_audio_and_text_events``.

Signatures follow facebookresearch/tribev2 (``from_pretrained(checkpoint_dir, checkpoint_name,
cache_folder, cluster, device, config_update)``, ``predict(events, verbose) -> (preds, segments)``).
``predict`` checks the events the way the real pipeline needs them (Audio rows with a readable file;
Word rows with text, timing and a non-empty context ending with the word; sorted words) and returns
(n_kept_TR, 20484) float32 plus one 1-TR segment per row. Row ``t`` of a timeline is
``expected_rows(...)[t]``: column 0 is the TR's start, column 1 the number of words overlapping it, the
rest a pattern seeded by the timeline's words, so mixing items up is detectable, except columns
``TEXT_COLUMNS``: there, as in the real model, the text features enter. Word events go through
``data.text_feature`` (the neuralset double's ``HuggingFaceText`` on a tiny random Llama that
``from_pretrained`` builds in the cache folder); each TR gets the sum, over the words overlapping it,
of a fixed random projection of the word's (2, d) feature.

Fault injection for the worker tests (environment variables, read at predict time):
``TRIBEV2_DOUBLE_STALL_ON=<word>`` sleeps an hour, ``TRIBEV2_DOUBLE_CRASH_ON=<word>`` kills the process,
``TRIBEV2_DOUBLE_RAISE_ON=<word>`` raises, whenever a Word row has that text.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tribev2 import main as _main

N_VERTICES = _main.N_VERTICES
VALID_SUFFIXES = {
    "text_path": {".txt"},
    "audio_path": {".wav", ".mp3", ".flac", ".ogg"},
    "video_path": {".mp4", ".avi", ".mkv", ".mov", ".webm"},
}
EVENT_TYPES = {"Audio", "Word", "Text", "Sentence", "Video", "CategoricalEvent"}
TEXT_COLUMNS = slice(2, 10)  # where text features enter a row; expected_rows leaves them NaN
TINY_TEXT_MODEL = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=4096)
TOKENIZER_CORPUS = [
    "The storm rolled in over the harbour at dusk, and the boats came home one by one.",
    "She said it wasn't the money; it was the silence after the door closed that she couldn't forgive.",
    "In 1969, three astronauts flew to the moon, and millions watched the grainy pictures at home.",
    "Numbers, commas; semicolons and words like don't appear in ordinary prose, text, and speech.",
]


def build_text_model(folder: Path) -> str:
    """A tiny random Llama (seed 0, saved in bf16 as hub checkpoints are) and a byte-level BPE tokenizer
    trained on a fixed corpus, in ``folder``: the stand-in for meta-llama/Llama-3.2-3B."""
    if (folder / "config.json").is_file():
        return str(folder)
    from transformers import LlamaConfig, LlamaModel

    from brainrl.brain.tribe.features import build_byte_bpe_tokenizer

    tokenizer = build_byte_bpe_tokenizer(TOKENIZER_CORPUS * 3, vocab_size=400)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.eos_token_id, **TINY_TEXT_MODEL)
        model = LlamaModel(config).to(torch.bfloat16)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def _text_block(extractor, words: pd.DataFrame, n_rows: int) -> np.ndarray:
    """(n_rows, n_text_columns): per TR, the projected text features of the words overlapping it."""
    from neuralset.events import extract_words

    width = TEXT_COLUMNS.stop - TEXT_COLUMNS.start
    block = np.zeros((n_rows, width), np.float32)
    events = extract_words(words)
    if not events:
        return block
    arrays = list(extractor._get_timed_arrays(events, 0.0, float(n_rows)))
    flat = np.stack([np.asarray(a.data, np.float32).ravel() for a in arrays])
    projection = np.random.default_rng(7).standard_normal((flat.shape[1], width)).astype(np.float32)
    projection /= np.sqrt(flat.shape[1])
    projected = flat @ projection
    for a, p in zip(arrays, projected):
        for t in range(n_rows):
            if a.start < t + 1 and max(a.start + a.duration, a.start + 1e-9) > t:
                block[t] += p
    return block


def _word_signature(words: list[str]) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256("\x1f".join(words).encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(N_VERTICES).astype(np.float32) * 0.1


def expected_rows(words: list[str], starts: list[float], durations: list[float], audio_duration: float) -> np.ndarray:
    """The rows this double predicts for one timeline (for tests to compare against)."""
    stop = max([audio_duration] + [s + d for s, d in zip(starts, durations)])
    n_windows = max(1, math.ceil(stop / (_main.WINDOW_TRS * _main.TR) - 1e-9))
    signature = _word_signature(words)
    rows = []
    for t in range(n_windows * _main.WINDOW_TRS):
        in_audio = t < audio_duration
        n_words = sum(1 for s, d in zip(starts, durations) if s < t + 1 and max(s + d, s + 1e-9) > t)
        if not (in_audio or n_words):
            continue  # remove_empty_segments drops TRs that overlap no event
        row = signature.copy()
        row[0], row[1] = float(t), float(n_words)
        row[TEXT_COLUMNS] = np.nan
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, N_VERTICES), np.float32)


def _check_events(events: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"events must be a pandas DataFrame, got {type(events).__name__}")
    for column in ("type", "start", "timeline"):
        if column not in events.columns:
            raise ValueError(f"events lack the required column {column!r}")
    unknown = set(events["type"]) - EVENT_TYPES
    if unknown:
        raise ValueError(f"unknown event types {sorted(unknown)}")
    events = events.copy()
    if "duration" not in events.columns:
        events["duration"] = np.nan
    import soundfile

    for index, row in events[events["type"] == "Audio"].iterrows():
        path = row.get("filepath")
        if not isinstance(path, str) or not path:
            raise ValueError("Audio events need a non-empty filepath")
        if not Path(path).is_file():
            raise ValueError(f"Audio filepath does not exist: {path}")
        info = soundfile.info(path)  # raises for unreadable audio, like the real Audio event
        if not float(row["start"]) >= 0:
            raise ValueError("Audio start must be >= 0")
        if pd.isna(row["duration"]):
            events.loc[index, "duration"] = info.frames / info.samplerate
    words = events[events["type"] == "Word"]
    if len(words):
        if "context" not in events.columns:
            raise ValueError("Contextualized embeddings require a context (Word rows have no 'context' column)")
        for _, row in words.iterrows():
            text, context = row.get("text"), row.get("context")
            if not isinstance(text, str) or not text:
                raise ValueError(f"Word text must be a non-empty str, got {text!r}")
            if not isinstance(context, str) or not context:
                raise ValueError(f"Contextualized embeddings require a context; word {text!r} has none")
            if not context.endswith(text):
                raise ValueError(f"context of word {text!r} must end with the word: {context[-40:]!r}")
            for column in ("start", "duration"):
                value = row[column]
                if not isinstance(value, (int, float, np.floating, np.integer)) or pd.isna(value) or value < 0:
                    raise ValueError(f"Word {column} must be a non-negative number, got {value!r}")
        for timeline, group in words.groupby("timeline", sort=False):
            if not group["start"].is_monotonic_increasing:
                raise ValueError(f"Words of timeline {timeline!r} are not sorted by start")
    return events


def _inject_faults(events: pd.DataFrame) -> None:
    texts = set(events.loc[events["type"] == "Word", "text"])
    if os.environ.get("TRIBEV2_DOUBLE_STALL_ON") in texts:
        time.sleep(3600)
    if os.environ.get("TRIBEV2_DOUBLE_CRASH_ON") in texts:
        os._exit(17)
    if os.environ.get("TRIBEV2_DOUBLE_RAISE_ON") in texts:
        raise RuntimeError(f"injected failure on {os.environ['TRIBEV2_DOUBLE_RAISE_ON']!r}")


def get_audio_and_text_events(events: pd.DataFrame, audio_only: bool = False) -> pd.DataFrame:
    """Adds contexts to Word rows that lack them (the real one rebuilds sentences with spaCy first and
    capitalizes them; this double joins the words of the timeline)."""
    events = events.copy()
    if audio_only:
        return events[events["type"] != "Word"].reset_index(drop=True)
    if "context" not in events.columns:
        events["context"] = None
    for _, group in events[events["type"] == "Word"].groupby("timeline", sort=False):
        seen: list[str] = []
        for index, row in group.sort_values("start").iterrows():
            seen.append(row["text"])
            if not isinstance(row["context"], str) or not row["context"]:
                events.at[index, "context"] = " ".join(seen[-1024:])
    return events.reset_index(drop=True)


class TribeModel(_main.TribeExperiment):
    cache_folder: str = "./cache"
    remove_empty_segments: bool = True

    @classmethod
    def from_pretrained(
        cls,
        checkpoint_dir: str | Path,
        checkpoint_name: str = "best.ckpt",
        cache_folder: str | Path = None,
        cluster: str = None,
        device: str = "auto",
        config_update: dict | None = None,
    ) -> "TribeModel":
        folder = Path(checkpoint_dir)
        if not folder.exists():
            raise OSError(f"cannot download {checkpoint_dir!r}: the test double has no hub access")
        for name in ("config.yaml", checkpoint_name):
            if not (folder / name).is_file():
                raise FileNotFoundError(folder / name)
        if cache_folder is not None:
            Path(cache_folder).mkdir(parents=True, exist_ok=True)
        model = cls(checkpoint_dir=str(folder))
        # the double's stand-in text model is its own artefact, not TRIBE's: without a cache folder (features
        # kept in RAM) it goes to a temporary folder, never into the working directory
        model_home = Path(cache_folder) if cache_folder is not None else Path(tempfile.mkdtemp(prefix="tribe-double-"))
        model.data.text_feature.model_name = build_text_model(model_home / "double-text-model")
        model.cache_folder = str(cache_folder or "./cache")
        model.device = "cpu" if device == "auto" else device
        for key, value in (config_update or {}).items():
            parts = key.split(".")
            if parts[0] == "data" and len(parts) == 2 and hasattr(model.data, parts[1]):
                setattr(model.data, parts[1], value)
            elif parts[0] == "data" and len(parts) == 3 and parts[2] in ("device", "cache_n_layers"):
                extractor = getattr(model.data, parts[1], None)
                if extractor is not None:
                    setattr(extractor, parts[2], value)
        model.config_update = dict(config_update or {})
        model._model = object()  # "weights loaded"
        return model

    def get_events_dataframe(self, text_path=None, audio_path=None, video_path=None) -> pd.DataFrame:
        provided = {k: v for k, v in dict(text_path=text_path, audio_path=audio_path, video_path=video_path).items() if v}
        if len(provided) != 1:
            raise ValueError(f"Exactly one of text_path, audio_path, video_path must be provided, got {list(provided)}")
        name, value = next(iter(provided.items()))
        path = Path(value)
        if path.suffix.lower() not in VALID_SUFFIXES[name]:
            raise ValueError(f"{name} must end with one of {sorted(VALID_SUFFIXES[name])}")
        if not path.is_file():
            raise FileNotFoundError(f"{name} does not exist: {path}")
        if name == "text_path":
            raise OSError("gTTS needs the network; the test double cannot synthesize speech")
        sidecar = path.with_suffix(".tsv")
        if not sidecar.is_file():
            raise OSError("WhisperX (uvx whisperx) needs the network; the test double reads only a .tsv sidecar")
        words = pd.read_csv(sidecar, sep="\t")
        words["type"], words["timeline"], words["subject"] = "Word", "default", "default"
        audio = pd.DataFrame([{"type": "Audio", "filepath": str(path), "start": 0.0, "timeline": "default", "subject": "default"}])
        return get_audio_and_text_events(pd.concat([audio, words], ignore_index=True))

    def predict(self, events: pd.DataFrame, verbose: bool = True) -> tuple[np.ndarray, list]:
        if self._model is None:
            raise RuntimeError("TribeModel must be instantiated via the .from_pretrained method")
        events = _check_events(events)
        _inject_faults(events)
        windows = self.data.get_loaders(events=events, split_to_build="all")["all"]
        preds, segments = [], []
        for window in windows:
            group = events[events["timeline"] == window.timeline]
            words = group[group["type"] == "Word"]
            audio = group[group["type"] == "Audio"]
            audio_duration = float((audio["start"] + audio["duration"]).max()) if len(audio) else 0.0
            rows = expected_rows(
                list(words["text"]), list(words["start"].astype(float)), list(words["duration"].astype(float)), audio_duration
            )
            if len(rows):
                times = rows[:, 0].astype(int)
                block = _text_block(self.data.text_feature, words, int(times.max()) + 1)
                rows[:, TEXT_COLUMNS] = block[times]
            for row in rows:
                if window.start <= row[0] < window.stop:
                    preds.append(row)
                    segments.append(window.copy(offset=float(row[0]) - window.start, duration=self.data.TR))
        return np.stack(preds).astype(np.float32), segments
