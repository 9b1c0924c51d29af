"""Stimuli -> the events DataFrame TRIBE v2's ``predict`` reads, and predictions -> one map per stimulus.

One stimulus is one ``timeline``: TRIBE then batches words and windows across stimuli in a single call,
and a word's context never leaks into another stimulus (contexts reset only when the timeline changes).
Audio is copied to a content-addressed path first: TRIBE keys its audio-feature cache on
``path + offset + duration``, so reusing one path for different audio of the same length would return
stale features (tribev2.md section 1.5).
"""

from __future__ import annotations

import functools
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


def require_audio(stimulus: Stimulus) -> None:
    """Raise FileNotFoundError if the stimulus has neither an audio file nor a waveform in memory."""
    if not has_audio_file(stimulus) and stimulus.waveform is None:
        raise FileNotFoundError(
            f"Stimulus {stimulus.text[:40]!r} has no audio: audio_path {stimulus.audio_path} is missing and no "
            "waveform is kept in memory. Synthesize it again or keep_waveform=True in the speech engine."
        )


def content_audio_target(stimulus: Stimulus, audio_dir: str | Path) -> Path:
    """``<audio_dir>/<content key><suffix>``: where ``content_audio_path`` puts the stimulus audio (nothing is
    written here). Raises FileNotFoundError if the stimulus has no audio."""
    require_audio(stimulus)
    suffix = Path(stimulus.audio_path).suffix.lower() if stimulus.audio_path else ".wav"
    return Path(audio_dir) / f"{stimulus.key()}{suffix or '.wav'}"


def has_audio_file(stimulus: Stimulus) -> bool:
    return stimulus.audio_path is not None and Path(stimulus.audio_path).is_file()


def content_audio_path(stimulus: Stimulus, audio_dir: str | Path) -> Path:
    """Copy (or write) the stimulus audio to ``<audio_dir>/<content key><suffix>`` and return that path."""
    target = content_audio_target(stimulus, audio_dir)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp{target.suffix}")
    if has_audio_file(stimulus):
        shutil.copyfile(stimulus.audio_path, tmp)
    else:
        import soundfile

        soundfile.write(str(tmp), np.asarray(stimulus.waveform, dtype=np.float32), stimulus.sample_rate)
    os.replace(tmp, target)  # atomic: concurrent writers of the same content agree
    return target


def pcm16_roundtrip(samples: Any) -> Any:
    """float32 samples as they come back from a 16-bit wav that ``soundfile.write`` made of them and
    ``soundfile.read`` read: ``floor(32768 x)`` clipped to int16, over 32768 (libsndfile 1.2's conversions;
    every step is exact in float32, so a torch tensor gives the same values on any device).
    ``check_pcm16_roundtrip`` compares this with the installed soundfile once per process."""
    import torch

    x = torch.as_tensor(samples, dtype=torch.float32)
    return torch.floor(x * 32768.0).clamp_(-32768.0, 32767.0) / 32768.0


@functools.lru_cache(maxsize=1)
def check_pcm16_roundtrip() -> None:
    """Raise if ``pcm16_roundtrip`` differs from a real write and read through soundfile (another libsndfile)."""
    import io

    import soundfile

    k = np.arange(-32768, 32768)
    probe = np.concatenate([k / 32768, (k + 0.5) / 32768, np.random.default_rng(0).uniform(-1.1, 1.1, 50_000),
                            [1.0, -1.0, 1e-9, -1e-9]]).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, probe, 16000, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    read = np.float32(soundfile.read(buffer)[0])
    ours = pcm16_roundtrip(probe).numpy()
    if not np.array_equal(read, ours):
        raise RuntimeError(
            f"This soundfile (libsndfile {getattr(soundfile, '__libsndfile_version__', '?')}) converts float32 to "
            f"16-bit wav differently from brainrl's in-memory copy ({int((read != ours).sum())} of {probe.size} "
            "probe samples differ): set audio_features='reference' or predict_path='tribe', and report this.")


def tribe_audio_format(stimulus: Stimulus) -> tuple[float, float]:
    """``(sampling rate, duration)`` of the audio TRIBE's ``Audio`` event reads for the stimulus (the values
    ``soundfile.info`` gives of the copy ``content_audio_path`` would make), without reading the samples."""
    require_audio(stimulus)
    if has_audio_file(stimulus):
        import soundfile

        info = soundfile.info(str(stimulus.audio_path))
        return float(info.samplerate), float(info.duration)
    return float(stimulus.sample_rate), np.asarray(stimulus.waveform).size / stimulus.sample_rate


def tribe_audio_batch(stimuli: Sequence[Stimulus], device: Any = "cpu") -> list[Any]:
    """Per stimulus, the ``(N, channels)`` float32 samples TRIBE's ``Audio`` event reads from the copy
    ``content_audio_path`` would make, without writing it (the direct predict path). Waveforms go to the
    device in one copy and through the 16-bit round trip there together."""
    import soundfile
    import torch

    out: list[Any] = [None] * len(stimuli)
    waves: list[tuple[int, np.ndarray]] = []
    for index, stimulus in enumerate(stimuli):
        require_audio(stimulus)
        if has_audio_file(stimulus):  # the copy is the file itself: read it as neuralset's Audio._read does
            data = torch.Tensor(soundfile.read(str(stimulus.audio_path))[0]).to(device)
            out[index] = data[:, None] if data.ndim == 1 else data
        else:  # the copy would be a 16-bit wav of the waveform
            waves.append((index, np.asarray(stimulus.waveform, dtype=np.float32).reshape(-1)))
    if waves:
        check_pcm16_roundtrip()
        joined = pcm16_roundtrip(torch.from_numpy(np.concatenate([w for _, w in waves])).to(device))
        for (index, _), piece in zip(waves, torch.split(joined, [w.size for _, w in waves])):
            out[index] = piece[:, None]
    return out


def tribe_audio_samples(stimulus: Stimulus, device: Any = "cpu") -> tuple[Any, float, float]:
    """``(samples, sampling rate, duration)`` of one stimulus (``tribe_audio_batch``, ``tribe_audio_format``)."""
    return (tribe_audio_batch([stimulus], device)[0], *tribe_audio_format(stimulus))


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
