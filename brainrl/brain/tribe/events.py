"""Stimuli -> the events DataFrame TRIBE v2's ``predict`` reads, and predictions -> one map per stimulus.

One stimulus is one ``timeline``: TRIBE then batches words and windows across stimuli in a single call,
and a word's context never leaks into another stimulus (contexts reset only when the timeline changes).
Audio is copied to a content-addressed path first: TRIBE keys its audio-feature cache on
``path + offset + duration``, so reusing one path for different audio of the same length would return
stale features (tribev2.md section 1.5).
"""

from __future__ import annotations

import math
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.stimulus import Stimulus

SUBJECT = "default"


def timeline_id(index: int, stimulus: Stimulus) -> str:
    """A timeline name unique within one call and readable in logs."""
    return f"brainrl-{index:04d}-{stimulus.key()[:12]}"


def content_audio_path(stimulus: Stimulus, audio_dir: str | Path) -> Path:
    """Copy (or write) the stimulus audio to ``<audio_dir>/<content key><suffix>`` and return that path."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    suffix = Path(stimulus.audio_path).suffix.lower() if stimulus.audio_path else ".wav"
    target = audio_dir / f"{stimulus.key()}{suffix or '.wav'}"
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{suffix}")
    if stimulus.audio_path is not None and Path(stimulus.audio_path).is_file():
        shutil.copyfile(stimulus.audio_path, tmp)
    elif stimulus.waveform is not None:
        import soundfile

        soundfile.write(str(tmp), np.asarray(stimulus.waveform, dtype=np.float32), stimulus.sample_rate)
    else:
        raise FileNotFoundError(
            f"Stimulus {stimulus.text[:40]!r} has no audio: audio_path {stimulus.audio_path} is missing and no "
            "waveform is kept in memory. Synthesize it again or keep_waveform=True in the speech engine."
        )
    os.replace(tmp, target)  # atomic: concurrent writers of the same content agree
    return target


def word_contexts(words: Sequence[str], max_context_words: int = 1024) -> list[str]:
    """Each word's context: up to ``max_context_words`` words of the same stimulus ending with the word.

    Natural text joined by single spaces (path C of tribev2.md section 1.5). TRIBE's own transforms
    instead rebuild sentences with spaCy and ``.capitalize()`` them; that is the reference path.
    """
    window: deque[str] = deque(maxlen=max_context_words)
    contexts = []
    for word in words:
        window.append(word)
        contexts.append(" ".join(window))
    return contexts


def validate_stimulus(stimulus: Stimulus) -> None:
    """Raise a clear error for a stimulus TRIBE cannot read."""
    if not stimulus.words:
        raise ValueError(f"Stimulus {stimulus.text[:40]!r} has no words; TRIBE's text features need Word rows.")
    previous = -math.inf
    for word in stimulus.words:
        if not word.text.strip():
            raise ValueError(f"Stimulus {stimulus.text[:40]!r} has an empty word; every Word needs text.")
        if word.start < previous - 1e-9:
            raise ValueError(
                f"Words of {stimulus.text[:40]!r} are not sorted by start time ({word.text!r} at {word.start}); "
                "TRIBE's context transform rejects unsorted words."
            )
        if word.duration < 0:
            raise ValueError(f"Word {word.text!r} has a negative duration ({word.duration}).")
        previous = word.start


def stimulus_rows(
    stimulus: Stimulus, timeline: str, audio_path: Path, *, with_context: bool, max_context_words: int = 1024
) -> list[dict[str, Any]]:
    """One Audio row and one Word row per word for a single stimulus/timeline."""
    validate_stimulus(stimulus)
    rows: list[dict[str, Any]] = [
        {
            "type": "Audio",
            "filepath": str(audio_path),
            "start": 0.0,
            "timeline": timeline,
            "subject": SUBJECT,
        }
    ]
    texts = [w.text for w in stimulus.words]
    contexts = word_contexts(texts, max_context_words) if with_context else [None] * len(texts)
    for index, (word, context) in enumerate(zip(stimulus.words, contexts)):
        row = {
            "type": "Word",
            "text": word.text,
            "start": float(word.start),
            "duration": float(max(word.duration, 0.0)),
            "timeline": timeline,
            "subject": SUBJECT,
            "language": "english",
            "sequence_id": index,
        }
        if context is not None:
            row["context"] = context
        rows.append(row)
    return rows


def build_events(
    stimuli: Sequence[Stimulus],
    timelines: Sequence[str],
    audio_paths: Sequence[Path],
    *,
    with_context: bool,
    max_context_words: int = 1024,
):
    """The events DataFrame for several stimuli, one timeline each (pandas imported lazily)."""
    import pandas as pd

    if not (len(stimuli) == len(timelines) == len(audio_paths)):
        raise ValueError("stimuli, timelines and audio_paths must have the same length.")
    if len(set(timelines)) != len(timelines):
        raise ValueError("Each stimulus needs its own timeline; got duplicates.")
    rows: list[dict[str, Any]] = []
    for stimulus, timeline, audio_path in zip(stimuli, timelines, audio_paths):
        rows.extend(
            stimulus_rows(stimulus, timeline, audio_path, with_context=with_context, max_context_words=max_context_words)
        )
    return pd.DataFrame(rows)


def split_by_timeline(preds: np.ndarray, segments: Sequence[Any], timelines: Sequence[str]) -> dict[str, np.ndarray]:
    """Group TRIBE's (n_kept_TR, 20484) rows by each segment's ``timeline``, ordered by ``start``.

    Uses the returned segments rather than any assumption about row order; a timeline with no kept TR
    is absent from the result.
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[0] != len(segments):
        raise ValueError(f"TRIBE returned {preds.shape} predictions for {len(segments)} segments.")
    wanted = set(timelines)
    rows: dict[str, list[tuple[float, int]]] = {}
    for index, segment in enumerate(segments):
        timeline = str(segment.timeline)
        if timeline not in wanted:
            raise ValueError(f"TRIBE returned a segment of unknown timeline {timeline!r}.")
        rows.setdefault(timeline, []).append((float(segment.start), index))
    out = {}
    for timeline, entries in rows.items():
        entries.sort()
        starts = [start for start, _ in entries]
        if len(set(np.round(starts, 6))) != len(starts):
            raise ValueError(f"TRIBE returned two predictions for one TR of timeline {timeline!r}.")
        out[timeline] = preds[[index for _, index in entries]].astype(np.float32, copy=False)
    return out
