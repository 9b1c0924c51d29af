"""The direct predict path's events and windows against the real neuralset (in the dev extra): the events it
builds are those TRIBE's DataFrame round trip gives, and its windows and their events are those of
``Data.get_loaders``' segments. (Its maps against TRIBE's predict: the ``tribe_real`` tier.)"""

import pandas as pd

from brainrl.brain.tribe.direct import build_timeline, overlapping
from brainrl.brain.tribe.events import build_events, content_audio_path, timeline_id

from test_tribe_real_neuralset import real_text_extractor_class  # noqa: F401  (real neuralset, doubles removed)
from tribe_helpers import make_stimulus


def _key(event):
    return type(event).__name__, event.start, event.duration, getattr(event, "text", None), getattr(event, "context", None)


def test_direct_events_and_windows_equal_tribes(real_text_extractor_class, tmp_path):  # noqa: F811
    import numpy as np
    from neuralset.events.utils import extract_events, standardize_events
    from neuralset.segments import _prepare_strided_windows, list_segments

    stimuli = [make_stimulus("Hello there, big world.", tmp_path / "a"),
               make_stimulus("one two three four five six seven eight nine ten eleven twelve thirteen", tmp_path / "b",
                             step=0.55)]
    timelines = [timeline_id(i, s) for i, s in enumerate(stimuli)]
    paths = [content_audio_path(s, tmp_path / "audio") for s in stimuli]
    # TRIBE's Data.get_loaders: standardize, one trigger per timeline spanning its events, standardize again
    frame = standardize_events(build_events(stimuli, timelines, paths, with_context=True))
    triggers = [{"type": "CategoricalEvent", "timeline": name, "start": group.start.min(),
                 "duration": group.stop.max() - group.start.min(), "split": "all", "subject": group.subject.unique()[0]}
                for name, group in frame.groupby("timeline")]
    frame = standardize_events(pd.concat([frame, pd.DataFrame(triggers)]))
    theirs = extract_events(frame)
    segments = list_segments(frame, triggers=frame.type == "CategoricalEvent", stride=6.0, duration=6.0,
                             stride_drop_incomplete=False)
    for stimulus, timeline, path in zip(stimuli, timelines, paths):
        line = build_timeline(stimulus, timeline, path, max_context_words=1024)
        expected = [e for e in theirs if e.timeline == timeline]
        assert [_key(e) for e in line.events] == [_key(e) for e in expected]
        audio = next(e for e in expected if type(e).__name__ == "Audio")
        assert (str(line.audio.filepath), line.audio.frequency, line.audio.offset) == (str(audio.filepath), audio.frequency, audio.offset)
        assert all(w.language == "english" and w.context.endswith(w.text) for w in line.words)
        # windows: the same starts and durations, each with the same events
        trigger = line.trigger
        starts, durations = _prepare_strided_windows(float(trigger.start), float(trigger.start + trigger.duration), 6.0, 6.0,
                                                     drop_incomplete=False)
        tribe_windows = [s for s in segments if s.timeline == timeline]
        assert [(s.start, s.duration) for s in tribe_windows] == list(zip(starts.tolist(), durations.tolist()))
        assert len(tribe_windows) == (2 if stimulus is stimuli[1] else 1)
        event_starts = np.array([e.start for e in line.events])
        event_stops = event_starts + np.array([e.duration for e in line.events])
        for segment in tribe_windows:
            ours = overlapping(line.events, event_starts, event_stops, segment.start, segment.start + segment.duration)
            assert sorted(map(_key, ours)) == sorted(map(_key, segment.ns_events))
