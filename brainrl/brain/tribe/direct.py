"""TRIBE v2's input tensors built straight from the stimuli (``predict_path="direct"``), then its own model.

``TribeModel.predict(events=df)`` spends most of a batch's host time in its data machinery, not in
arithmetic: ``Data.get_loaders`` round-trips ~200 event rows per stimulus through pandas and pydantic twice
(``standardize_events``), every extractor's ``prepare`` goes through exca's per-item cache bookkeeping, and a
DataLoader then calls every extractor once per 100 s window. This module makes the same tensors from the same
pieces, once per call:

1. events: neuralset's own ``Audio`` event per stimulus (duration and rate read from the file, as TRIBE reads
   them) and ``Word`` events built from brainrl's rows (``events.stimulus_rows``, the rows the DataFrame path
   gets), without the DataFrame round trip;
2. features: each extractor's undecorated ``_get_data`` (TRIBE's computation, or brainrl's one-pass text and
   batched audio features standing in for it), called once on all events of the call, with no exca cache;
   features come in the form the extractors read them (their ``_aggregate_layers`` layer groups, which the
   one-pass text and batched audio paths average on the model's device: 10-12x less to copy);
3. windows: ``Data.get_loaders``' layout: per stimulus one trigger spanning its events (first start to last
   stop), windows of ``duration_trs`` TRs every ``duration_trs - overlap_trs_train`` TRs
   (``neuralset.segments._prepare_strided_windows``), each window's events being those that overlap it;
4. per window and extractor, the extractor's own ``_get_relevant_events`` and ``_tarrays_to_tensor`` place
   the features on its 2 Hz grid from the ``TimedArray``s its ``_get_timed_arrays`` would build; a
   window without events of an ``allow_missing`` extractor gets zeros; an extractor with no event in the
   whole call is left out of the batch, as TRIBE removes it (the fusion model then feeds zeros for it);
5. the fusion model runs on ``data.batch_size`` windows per call, and each window's output TRs are kept as
   ``TribeModel.predict`` keeps them (those overlapping an event, the trigger included).

Equality with ``TribeModel.predict`` is tested on the real stack (tests/brain/tribe/test_tribe_real_stack.py:
``test_direct_path_equals_tribes_predict``). What it does not cover is refused with a message, not
approximated: TRIBE's own event transforms (``speech_path="reference"`` or ``contexts="tribe"``), extractors
other than text and audio with events, trigger aggregation.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.brain.tribe.events import SUBJECT, stimulus_rows
from brainrl.stimulus import Stimulus


@dataclass
class DirectStats:
    """What the direct path did since the engine loaded (for logs, tests and the benchmark)."""

    calls: int = 0
    windows: int = 0  # 100 s windows built
    forwards: int = 0  # fusion-model calls
    seconds_events: float = 0.0
    seconds_features: float = 0.0  # text + audio feature computation (also counted in their own stats)
    seconds_tensors: float = 0.0  # placing features on the windows' grids (after the audio features)
    seconds_tensors_text: float = 0.0  # the text windows, placed while the audio thread runs
    seconds_fusion: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def seconds_overlapped(self) -> float:
        """The calling thread's span beside the audio thread (events, text features, text windows, the wait for
        the audio features): the one span the benchmarks add up with the stages after it."""
        return self.seconds_events + self.seconds_features + self.seconds_tensors_text


@dataclass
class TimelineEvents:
    """One stimulus's events, sorted as ``standardize_events`` sorts them (start, then longer first)."""

    timeline: str
    audio: Any  # neuralset Audio event
    words: list[Any]  # neuralset Word events
    events: list[Any]  # audio + words + the trigger, sorted
    trigger: Any  # the CategoricalEvent spanning the timeline (get_loaders' "dummy" event)


@dataclass
class Window:
    """One 100 s window of a stimulus: its segment, its timeline's events (with their start and stop times), the
    events overlapping it, and the input tensors placed for it."""

    segment: Any  # neuralset Segment
    line: TimelineEvents
    starts: np.ndarray
    stops: np.ndarray
    inside: list[Any]
    tensors: dict[str, Any] = field(default_factory=dict)


def audio_event(timeline: str, audio_path: Path, audio_format: tuple[float, float] | None = None) -> Any:
    """The neuralset ``Audio`` event of a stimulus's audio row (``events.stimulus_rows``: start 0, the subject).
    ``audio_format``: (sampling rate, duration) of audio kept in memory (``events.tribe_audio_samples``);
    otherwise they are read from the file at ``audio_path``."""
    from neuralset.base import Frequency
    from neuralset.events.etypes import Audio

    if audio_format is None:
        # validated: duration and sampling rate come from the file, as when TRIBE parses the Audio row
        return Audio(start=0.0, timeline=timeline, filepath=str(audio_path), extra={"subject": SUBJECT})
    # the values Audio.model_post_init reads from the file the tribe path writes (soundfile.info); the "memory:"
    # path is no file (neuralset skips its existence check for paths with ":"; a read would fail)
    rate, duration = audio_format
    return Audio.model_construct(start=0.0, timeline=timeline, filepath=f"memory:{audio_path}",
                                 frequency=Frequency(rate), duration=float(duration), extra={"subject": SUBJECT})


def build_timeline(stimulus: Stimulus, timeline: str, audio_path: Path, max_context_words: int,
                   audio: Any = None) -> TimelineEvents:
    """The events TRIBE's data loader reads for one stimulus, as neuralset events (``audio``: its Audio event,
    if already built)."""
    from neuralset.events.etypes import CategoricalEvent, Word

    rows = stimulus_rows(stimulus, timeline, audio_path, with_context=True, max_context_words=max_context_words)
    word_rows = rows[1:]  # rows[0] is the audio row, whose event audio_event builds
    if audio is None:
        audio = audio_event(timeline, audio_path)
    words = []
    for row in word_rows:  # values already checked by stimulus_rows (non-empty text, sorted, duration >= 0)
        words.append(Word.model_construct(
            start=row["start"], timeline=timeline, duration=row["duration"], text=row["text"],
            language=row["language"], context=row["context"],
            extra={"subject": row["subject"], "sequence_id": row["sequence_id"]}))
    events = [audio, *words]
    start = min(e.start for e in events)
    stop = max(e.start + e.duration for e in events)
    trigger = CategoricalEvent(start=start, duration=stop - start, timeline=timeline, extra={"subject": SUBJECT})
    ordered = sorted([*events, trigger], key=lambda e: (e.start, -e.duration))  # stable, as pandas' sort
    return TimelineEvents(timeline, audio, sorted(words, key=lambda e: (e.start, -e.duration)), ordered, trigger)


def overlap_mask(starts: np.ndarray, stops: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Which events overlap ``[start, stop)`` (neuralset's ``_EventStore`` rule: start < stop and stop > start)."""
    return (starts < stop) & (stops > start)


def overlapping(events: Sequence[Any], starts: np.ndarray, stops: np.ndarray, start: float, stop: float) -> list[Any]:
    """Events overlapping ``[start, stop)``."""
    return [e for e, keep in zip(events, overlap_mask(starts, stops, start, stop)) if keep]


class DirectPredictor:
    """``TribeModel.predict`` for brainrl's stimuli without its events DataFrame (module docstring)."""

    def __init__(self, tribe_model: Any, text_get_data: Callable | None, audio_get_data: Callable | None,
                 stats: DirectStats, background: Any = None, context: Callable[[], Any] | None = None):
        """``background``: an executor in which the audio features are computed while this thread builds the
        word events and text features (the GPU runs w2v-bert meanwhile); ``context``: the context that
        thread enters (the caller's device and inference mode are per thread)."""
        self.tribe = tribe_model
        self.data = tribe_model.data
        self.brain = tribe_model._model
        self.text_get_data = text_get_data
        self.audio_get_data = audio_get_data
        self.stats = stats
        self.background = background
        self.context = context or contextlib.nullcontext

    # -- the extractors TRIBE would keep --------------------------------------------------------------
    def extractors(self, present_types: set[str]) -> dict[str, Any]:
        """``Data.get_loaders``' extractors: the used modalities that have events, then ``subject_id``."""
        from neuralset.events.etypes import EventTypesHelper

        kept: dict[str, Any] = {}
        for modality in self.data.features_to_use:
            extractor = getattr(self.data, f"{modality}_feature")
            if not any(name in present_types for name in EventTypesHelper(extractor.event_types).names):
                continue  # TRIBE removes it ("no corresponding events")
            if modality not in ("text", "audio"):
                raise NotImplementedError(
                    f"predict_path='direct' builds text and audio features; the {modality} extractor has events here. "
                    "Use predict_path='tribe'.")
            if extractor.aggregation == "trigger":
                raise NotImplementedError(f"predict_path='direct' does not implement aggregation='trigger' ({modality}).")
            kept[modality] = extractor
        return kept

    def subject_index(self) -> int:
        """``LabelEncoder.prepare`` on brainrl's one subject: its index in the mapping."""
        mapping = self.data.subject_id.predefined_mapping
        if mapping is None:
            return 0  # sorted labels of the call: only SUBJECT
        if SUBJECT not in mapping:
            raise ValueError(f"TRIBE's subject mapping has no {SUBJECT!r} subject; use predict_path='tribe'.")
        return int(mapping[SUBJECT])

    # -- features --------------------------------------------------------------------------------------
    def word_arrays(self, extractor: Any, words: list[Any]) -> list[np.ndarray]:
        """Per word, the array ``HuggingFaceText._get_timed_arrays`` wraps: ``text_get_data`` yields it in that
        read form (layer groups already averaged, ``one_pass_extractor.read_form``)."""
        arrays = [np.asarray(a) for a in self.text_get_data(extractor, words)]
        if len(arrays) != len(words):
            raise RuntimeError(f"text features: {len(arrays)} arrays for {len(words)} words")
        return arrays

    def audio_arrays(self, extractor: Any, clips: list[Any], samples: list[Any] | None = None) -> list[Any]:
        arrays = list(self.audio_get_data(extractor, clips) if samples is None
                      else self.audio_get_data(extractor, clips, samples=samples))
        if len(arrays) != len(clips):
            raise RuntimeError(f"audio features: {len(arrays)} arrays for {len(clips)} clips")
        return arrays

    def submit(self, function: Callable, *args: Any) -> Any:
        """``function(*args)`` in the background executor under ``context`` (a finished future without one)."""
        from concurrent.futures import Future

        def run() -> Any:
            with self.context():
                return function(*args)

        if self.background is not None:
            return self.background.submit(run)
        future: Future = Future()
        try:
            future.set_result(run())
        except Exception as error:  # noqa: BLE001 - raised by result(), as from the executor
            future.set_exception(error)
        return future

    # -- one window's tensors ----------------------------------------------------------------------------
    @staticmethod
    def place(extractor: Any, tarrays: list[Any], start: float, duration: float) -> Any:
        """``BaseExtractor.__call__`` after ``_get_timed_arrays``: the extractor's own placement."""
        frequency = float(tarrays[0].frequency if extractor.frequency == "native" else extractor.frequency)
        return type(extractor)._tarrays_to_tensor(tarrays, start, duration, frequency, extractor.aggregation)

    @staticmethod
    def clip_window(extractor: Any, clip: Any, clip_start: float, start: float, duration: float) -> Any:
        """``Wav2VecBert._get_timed_arrays`` for one clip and window: the clip placed at its start, the
        window's part of it (``audio_get_data`` yields the layers already in their read form)."""
        return clip.with_start(clip_start).overlap(start=start, duration=duration)

    def default_shape(self, name: str, extractor: Any, features: dict) -> tuple:
        """(feature shape, torch dtype) of the zeros a window without events gets: what the extractor's
        ``prepare`` records from its first event (``_missing_default``); ``features`` as ``place_all`` takes them."""
        import torch

        if name == "text":
            example = np.asarray(next(iter(features.values())))
        else:
            clip = next(iter(features.values()))
            example = np.asarray(self.clip_window(extractor, clip, 0.0, 0.0, 0.001).data)[..., 0]
        return tuple(example.shape), torch.from_numpy(np.zeros(0, dtype=example.dtype)).dtype

    @staticmethod
    def missing(extractor: Any, default: tuple, duration: float) -> Any:
        """``BaseExtractor.__call__`` with no event and ``allow_missing``: zeros over the window's samples."""
        import torch
        from neuralset.base import Frequency

        if not extractor.allow_missing:
            raise ValueError(f"a window has no {extractor.event_types} event and {type(extractor).__name__} does not "
                             "allow missing events (TRIBE's predict fails the same way)")
        shape, dtype = default
        n_times = max(1, Frequency(float(extractor.frequency)).to_ind(duration))
        return torch.zeros(*shape, n_times, dtype=dtype)

    # -- windows -------------------------------------------------------------------------------------------
    def windows(self, lines: Sequence[TimelineEvents]) -> list["Window"]:
        """``Data.get_loaders``' windows: per stimulus, ``duration_trs`` TRs every ``duration_trs -
        overlap_trs_train`` over its trigger, each with the events that overlap it (tensors placed later)."""
        from neuralset.segments import Segment, _prepare_strided_windows

        TR = float(self.data.TR)
        duration = float(self.data.duration_trs * TR)
        stride = float((self.data.duration_trs - self.data.overlap_trs_train) * TR)
        windows = []
        for line in lines:
            starts = np.array([e.start for e in line.events], dtype=float)
            stops = starts + np.array([e.duration for e in line.events], dtype=float)
            seg_starts, seg_durations = _prepare_strided_windows(
                float(line.trigger.start), float(line.trigger.start + line.trigger.duration), stride, duration,
                drop_incomplete=self.data.stride_drop_incomplete)
            for start, length in zip(seg_starts, seg_durations):
                start, length = float(start), float(length)
                windows.append(Window(Segment(start=start, duration=length, timeline=line.timeline), line, starts, stops,
                                      overlapping(line.events, starts, stops, start, start + length)))
        return windows

    def place_all(self, name: str, extractor: Any, windows: Sequence["Window"], features: dict[int, Any]) -> list[Any]:
        """The ``name`` modality's tensor for each window: its relevant events' features (``features`` by event id:
        word arrays for text, clip features for audio) placed by the extractor, or zeros without any."""
        from neuralset.base import TimedArray

        text = name == "text"
        default = self.default_shape(name, extractor, features)
        out = []
        for window in windows:
            start, length = window.segment.start, window.segment.duration
            relevant = extractor._get_relevant_events(window.inside, None)
            if text:
                tarrays = [TimedArray(frequency=0, duration=w.duration, start=w.start, data=features[id(w)]) for w in relevant]
            else:
                tarrays = [self.clip_window(extractor, features[id(c)], c.start, start, length) for c in relevant]
            out.append(self.place(extractor, tarrays, start, length) if tarrays else self.missing(extractor, default, length))
        return out

    # -- the call --------------------------------------------------------------------------------------------
    def predict(self, stimuli: Sequence[Stimulus], timelines: Sequence[str], audio_paths: Sequence[Path],
                max_context_words: int, audio: Sequence[tuple[float, float]] | None = None,
                load_samples: Callable[[], Sequence[Any]] | None = None) -> tuple[np.ndarray, list[Any]]:
        """``(n_kept_TR, n_vertices)`` predictions and their segments (``timeline``, ``start``), like
        ``TribeModel.predict`` returns them. ``audio``: per stimulus, the (sampling rate, duration) TRIBE would
        read from ``audio_paths`` (``events.tribe_audio_format``), and ``load_samples()`` its samples
        (``events.tribe_audio_batch``), called in the audio thread: no file is written or read."""
        import torch
        from neuralset.dataloader import SegmentData

        self.stats.calls += 1
        t0 = time.perf_counter()
        if (audio is None) != (load_samples is None):
            raise ValueError("audio formats and load_samples come together (in-memory audio) or not at all")
        formats = [None] * len(stimuli) if audio is None else list(audio)
        clips = [audio_event(tl, p, f) for tl, p, f in zip(timelines, audio_paths, formats)]
        present = {"Audio", "Word", "CategoricalEvent"} if stimuli else set()
        extractors = self.extractors(present)
        clip_arrays: Any = None
        if "audio" in extractors:  # started first: w2v-bert runs while this thread builds words and text features
            def audio_features() -> list[Any]:
                return self.audio_arrays(extractors["audio"], clips, None if load_samples is None else list(load_samples()))

            clip_arrays = self.submit(audio_features)
        placed: dict[str, list[Any]] = {}
        try:
            lines = [build_timeline(s, tl, p, max_context_words, c)
                     for s, tl, p, c in zip(stimuli, timelines, audio_paths, clips)]
            t1 = time.perf_counter()
            self.stats.seconds_events += t1 - t0
            windows = self.windows(lines)
            if "text" in extractors:
                words = [w for line in lines for w in line.words]
                word_features = {id(w): a for w, a in zip(words, self.word_arrays(extractors["text"], words))}
                t2 = time.perf_counter()
                self.stats.seconds_features += t2 - t1
                # placed while the audio thread may still run: the text windows need only the word features
                placed["text"] = self.place_all("text", extractors["text"], windows, word_features)
                t1 = time.perf_counter()
                self.stats.seconds_tensors_text += t1 - t2
        finally:  # the audio work ends (or fails) before this call returns or raises
            clip_features = {} if clip_arrays is None else {id(c): a for c, a in zip(clips, clip_arrays.result())}
        t2 = time.perf_counter()
        self.stats.seconds_features += t2 - t1
        if "audio" in extractors:
            placed["audio"] = self.place_all("audio", extractors["audio"], windows, clip_features)
        subject = torch.tensor([self.subject_index()], dtype=torch.long)
        for index, window in enumerate(windows):
            window.tensors.update({name: placed[name][index] for name in extractors})  # the extractors' order
            window.tensors["subject_id"] = subject
        t3 = time.perf_counter()
        self.stats.seconds_tensors += t3 - t2
        self.stats.windows += len(windows)
        TR = float(self.data.TR)

        preds: list[np.ndarray] = []
        kept_segments: list[Any] = []
        size = int(self.data.batch_size)
        for begin in range(0, len(windows), size):
            chunk = windows[begin: begin + size]
            # the TRs TribeModel.predict keeps, known before the forward: only those rows leave the device
            rows, columns = [], []
            for row, window in enumerate(chunk):
                for column, offset in enumerate(np.arange(0, window.segment.duration - 1e-2, TR)):
                    sub = window.segment.copy(offset=offset, duration=TR)  # TribeModel.predict's per-TR segments
                    empty = not overlap_mask(window.starts, window.stops, sub.start, sub.start + sub.duration).any()
                    if empty and self.tribe.remove_empty_segments:
                        continue  # remove_empty_segments: no event overlaps this TR
                    rows.append(row)
                    columns.append(column)
                    kept_segments.append(sub)
            data = {name: torch.stack([w.tensors[name] for w in chunk]) for name in chunk[0].tensors}
            batch = SegmentData(data=data, segments=[w.segment for w in chunk]).to(self.brain.device)
            out = self.brain(batch).detach()  # (windows, vertices, TRs)
            self.stats.forwards += 1
            n_trs = len(np.arange(0, chunk[0].segment.duration - 1e-2, TR))
            if out.shape[-1] != n_trs:
                raise RuntimeError(f"the fusion model returned {out.shape[-1]} TRs for windows of {n_trs}")
            if rows:
                index = torch.as_tensor(rows, device=out.device), torch.as_tensor(columns, device=out.device)
                preds.append(out[index[0], :, index[1]].cpu().numpy())  # (kept TRs, vertices)
        self.stats.seconds_fusion += time.perf_counter() - t3
        if not preds:
            return np.zeros((0, 0), dtype=np.float32), []
        return np.concatenate(preds), kept_segments
