"""The TRIBE worker process (running the tribev2 test double): protocol, crash, kill, stall."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from brainrl.brain import BrainMap, Failed
from brainrl.brain.tribe import TribeBrainModel
from brainrl.brain.tribe.protocol import MAGIC, ProtocolError, encode_frame, read_frame
from brainrl.brain.base import MAP_ATOL, MAP_RTOL

from tribe_helpers import DOUBLES
from tribe_helpers import assert_matches_double, make_stimulus


def _worker_model(tmp_path, checkpoint_dir, **env):
    return TribeBrainModel(
        worker=True,
        worker_pythonpath=[str(DOUBLES)],
        worker_env={k: v for k, v in env.items()},
        checkpoint_dir=str(checkpoint_dir),
        cache_folder=str(tmp_path / "cache"),
        device="cpu",
        load_timeout=600,  # a safety net, not a timing claim: a loaded CI box took > 120 s to start a worker
        predict_timeout=30,
        per_item_timeout=2,
    )


def test_frames_round_trip_and_reject_garbage():
    r, w = os.pipe()
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 4), np.float64)]
    os.write(w, encode_frame({"op": "x", "items": [{"a": 1}]}, arrays))
    header, got = read_frame(r, timeout=5)
    assert header == {"op": "x", "items": [{"a": 1}]} and [a.tolist() for a in got] == [a.tolist() for a in arrays]
    os.write(w, b"progress 10%|###\n")  # something printed on the protocol stream
    with pytest.raises(ProtocolError, match="bad frame start"):
        read_frame(r, timeout=5)
    os.close(w)
    os.close(r)
    r, w = os.pipe()
    os.write(w, MAGIC)  # a truncated frame: the deadline fires instead of hanging
    with pytest.raises(TimeoutError):
        read_frame(r, timeout=0.3)
    os.close(w)  # and a closed stream is reported as a gone worker
    with pytest.raises(ProtocolError, match="closed"):
        read_frame(r, timeout=1)
    os.close(r)


def test_worker_predicts_like_in_process_and_recovers_from_a_crash(tmp_path, checkpoint_dir):
    model = _worker_model(tmp_path, checkpoint_dir, TRIBEV2_DOUBLE_CRASH_ON="segfault")
    try:
        identity = model.identity()
        assert identity["name"] == "tribe" and identity["speech_path"] == "fast" and identity["tribev2"] is None
        first_pid = model.worker_pid
        stimuli = [make_stimulus(t, tmp_path) for t in ("first text here", "second one", "the third text of three")]
        maps = model.predict(stimuli)
        assert all(isinstance(m, BrainMap) for m in maps)
        import sys

        sys.path.insert(0, str(DOUBLES))
        try:
            for stimulus, brain_map in zip(stimuli, maps):
                assert_matches_double(brain_map.data, stimulus)
        finally:
            sys.path.remove(str(DOUBLES))
        # the worker dies in the middle of a request: every item of it fails with the reason
        crashed = model.predict([stimuli[0], make_stimulus("this will segfault now", tmp_path)])
        assert all(isinstance(m, Failed) for m in crashed)
        assert "died" in crashed[0].reason and "exit code 17" in crashed[0].reason
        # the next call starts a fresh worker and works
        again = model.predict(stimuli[:1])
        assert isinstance(again[0], BrainMap) and model.worker_pid not in (None, first_pid)
        # another batch, another process: equal within float32 rounding (docs/design.md, batch invariance)
        np.testing.assert_allclose(again[0].data, maps[0].data, rtol=MAP_RTOL, atol=MAP_ATOL)
    finally:
        model.close()
    assert model.worker_pid is None


def test_stall_times_out_fails_items_and_restarts(tmp_path, checkpoint_dir):
    model = _worker_model(tmp_path, checkpoint_dir, TRIBEV2_DOUBLE_STALL_ON="hang")
    model._client.settings.predict_timeout = 1.5
    model._client.settings.per_item_timeout = 0.0
    try:
        model.identity()
        pid = model.worker_pid
        started = time.monotonic()
        stalled = model.predict([make_stimulus("please hang forever", tmp_path), make_stimulus("innocent", tmp_path)])
        assert all(isinstance(m, Failed) and "stalled" in m.reason for m in stalled)
        assert time.monotonic() - started < 10
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the stalled worker was killed, not left behind
        [ok] = model.predict([make_stimulus("fine after restart", tmp_path)])
        assert isinstance(ok, BrainMap) and model.worker_pid != pid
    finally:
        model.close()


@pytest.mark.slow
def test_kill_mid_request_fails_items_and_restarts(tmp_path, checkpoint_dir):
    model = _worker_model(tmp_path, checkpoint_dir, TRIBEV2_DOUBLE_STALL_ON="hang")
    try:
        model.identity()
        pid = model.worker_pid
        result = {}
        thread = threading.Thread(target=lambda: result.update(out=model.predict([make_stimulus("hang here", tmp_path)])))
        thread.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=30)
        assert not thread.is_alive()
        [killed] = result["out"]
        assert isinstance(killed, Failed) and "died" in killed.reason and "-9" in killed.reason
        [ok] = model.predict([make_stimulus("fine after restart", tmp_path)])
        assert isinstance(ok, BrainMap) and model.worker_pid != pid
    finally:
        model.close()


def test_worker_that_cannot_load_fails_items_with_reason(tmp_path):
    model = TribeBrainModel(worker=True, worker_pythonpath=[str(DOUBLES)], checkpoint_dir=str(tmp_path / "nope"),
                            device="cpu", load_timeout=600)
    try:
        [failed] = model.predict([make_stimulus("no checkpoint", tmp_path)])
        assert isinstance(failed, Failed) and "could not load" in failed.reason and "config.yaml" in failed.reason
    finally:
        model.close()


def test_pipeline_with_espeak_runs_through_the_worker(tmp_path, checkpoint_dir):
    """The recipe switch: model 'tribe' in a PipelineConfig, real espeak speech, TRIBE (double) in a worker."""
    pytest.importorskip("espeakng_loader")
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

    config = PipelineConfig(
        speech="espeak", speech_kwargs={"out_dir": str(tmp_path / "speech")}, model="tribe", cache_dir="",
        model_kwargs={"worker": True, "worker_pythonpath": [str(DOUBLES)], "checkpoint_dir": str(checkpoint_dir),
                      "cache_folder": str(tmp_path / "cache"), "device": "cpu"},
    )
    pipeline = BrainPipeline(config)
    try:
        texts = ["The ship left the harbour at dawn.", "", "A quiet street, after the rain."]
        maps = pipeline(texts)
        assert isinstance(maps[0], BrainMap) and isinstance(maps[1], Failed) and isinstance(maps[2], BrainMap)
        assert maps[0].provenance["brain_model"]["speech_path"] == "fast"
        assert not np.array_equal(maps[0].data[0, 2:], maps[2].data[0, 2:])  # word-dependent content
    finally:
        pipeline.close()
