"""The training-process side of the TRIBE worker: start it, talk to it, restart it when it dies or stalls.

Every exchange has a deadline. A worker that crashes, stalls past its timeout or garbles the stream
is killed; the items of that request come back as failure reasons (never zeros) and the next request
starts a fresh worker.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.brain.tribe.protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    WorkerTimeout,
    read_frame,
    stimulus_to_dict,
    write_frame,
)
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[3]  # the folder that holds the brainrl package


@dataclass
class WorkerConfig:
    """How to start the worker and how long to wait for it."""

    python: str = sys.executable  # the TRIBE environment's interpreter (scripts/setup_tribe.sh)
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    pythonpath: list[str] = field(default_factory=list)  # prepended to PYTHONPATH (after brainrl's root)
    load_timeout: float = 1800.0  # first load downloads ~0.7 GB + Llama-3.2-3B + w2v-bert
    predict_timeout: float = 120.0  # per request, plus per_item_timeout per stimulus
    per_item_timeout: float = 10.0
    ping_timeout: float = 10.0
    max_restarts: int = 5  # consecutive failed starts before giving up


class WorkerClient:
    """A TRIBE worker subprocess. Thread-safe: one request at a time."""

    def __init__(self, config: dict[str, Any], settings: WorkerConfig | None = None):
        self.config = config
        self.settings = settings or WorkerConfig()
        self._proc: subprocess.Popen | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._next_id = 0
        self.identity: dict[str, Any] | None = None
        self.starts = 0
        self.restarts = 0
        self._failed_starts = 0

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _spawn(self) -> None:
        env = dict(os.environ)
        env.update(self.settings.env)
        paths = [str(_REPO_ROOT), *self.settings.pythonpath]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._stderr_tail.clear()
        self._proc = subprocess.Popen(
            [self.settings.python, "-m", "brainrl.brain.tribe.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        threading.Thread(target=self._drain_stderr, args=(self._proc,), daemon=True).start()
        self.starts += 1

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            log.debug("tribe worker: %s", line)

    def _exchange(self, header: dict[str, Any], timeout: float) -> tuple[dict[str, Any], list[np.ndarray]]:
        assert self._proc is not None
        self._next_id += 1
        header = dict(header, id=self._next_id)
        try:
            write_frame(self._proc.stdin, header)
        except (BrokenPipeError, OSError) as error:
            raise ProtocolError(f"could not write to the worker: {error}") from error
        reply, arrays = read_frame(self._proc.stdout.fileno(), timeout=timeout)
        if reply.get("id") != header["id"]:
            raise ProtocolError(f"reply id {reply.get('id')} does not match request id {header['id']}")
        return reply, arrays

    def _ensure_started(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self.identity is not None:
            return
        if self._proc is not None:
            self._kill("restart")
            self.restarts += 1
        if self._failed_starts >= self.settings.max_restarts:
            raise RuntimeError(
                f"the TRIBE worker failed to start {self._failed_starts} times in a row; last stderr:\n"
                + self.stderr_tail()
            )
        self._spawn()
        try:
            reply, _ = self._exchange(
                {"op": "load", "config": self.config, "protocol": PROTOCOL_VERSION}, self.settings.load_timeout
            )
        except (ProtocolError, WorkerTimeout) as error:
            self._failed_starts += 1
            self._kill("failed start")
            raise RuntimeError(f"the TRIBE worker did not start: {error}; stderr:\n{self.stderr_tail()}") from error
        if not reply.get("ok"):
            self._failed_starts += 1
            self._kill("failed load")
            raise RuntimeError(f"the TRIBE worker could not load TRIBE v2: {reply.get('error')}")
        self._failed_starts = 0
        self.identity = reply["identity"]

    def _kill(self, why: str) -> None:
        proc, self._proc = self._proc, None
        self.identity = None
        if proc is None:
            return
        if proc.poll() is None:
            log.warning("killing TRIBE worker pid %d (%s)", proc.pid, why)
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill -9 does not hang
            pass
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def start(self) -> dict[str, Any]:
        """Start and load the worker now (otherwise the first request does); returns its identity."""
        with self._lock:
            self._ensure_started()
            return dict(self.identity or {})

    def stderr_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])

    # -- requests ------------------------------------------------------------------------------------
    def predict(self, stimuli: Sequence[Stimulus]) -> list[np.ndarray | str]:
        """One array or failure reason per stimulus. Never raises for worker trouble."""
        if not stimuli:
            return []
        with self._lock:
            try:
                self._ensure_started()
            except RuntimeError as error:
                return [f"TRIBE worker unavailable: {error}"] * len(stimuli)
            timeout = self.settings.predict_timeout + self.settings.per_item_timeout * len(stimuli)
            try:
                with tempfile.TemporaryDirectory(prefix="brainrl-worker-audio-") as scratch:
                    # audio kept only in memory travels as WAV files that live for this exchange
                    reply, arrays = self._exchange(
                        {"op": "predict", "stimuli": [_with_audio_file(s, Path(scratch)) for s in stimuli]}, timeout
                    )
            except WorkerTimeout:
                self._kill("stalled")
                return [f"TRIBE worker stalled: no answer within {timeout:.0f} s; it was killed and will restart"] * len(
                    stimuli
                )
            except ProtocolError as error:
                code = None
                if self._proc is not None:
                    try:  # a closed stream usually means the process is exiting: get its exit code
                        code = self._proc.wait(timeout=2)
                    except subprocess.TimeoutExpired:
                        code = None
                time.sleep(0.05)  # let the stderr thread catch the last lines
                tail = self.stderr_tail(5)
                self._kill("crashed")
                reason = f"TRIBE worker died (exit code {code}): {error}"
                if tail:
                    reason += f"; stderr: {tail}"
                return [reason] * len(stimuli)
            if not reply.get("ok"):
                return [f"TRIBE worker error: {reply.get('error')}"] * len(stimuli)
            items = reply.get("items", [])
            if len(items) != len(stimuli):
                return [f"TRIBE worker returned {len(items)} items for {len(stimuli)} stimuli"] * len(stimuli)
            out: list[np.ndarray | str] = []
            for item in items:
                if "error" in item:
                    out.append(str(item["error"]))
                else:
                    out.append(arrays[int(item["array"])])
            return out

    def ping(self) -> bool:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                reply, _ = self._exchange({"op": "ping"}, self.settings.ping_timeout)
            except (ProtocolError, WorkerTimeout):
                self._kill("unresponsive")
                return False
            return bool(reply.get("ok"))

    def close(self) -> None:
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                try:
                    self._exchange({"op": "shutdown"}, timeout=5)
                    proc.wait(timeout=5)
                except Exception:  # noqa: BLE001 - we are shutting down anyway
                    pass
            self._kill("close")


def _with_audio_file(stimulus: Stimulus, folder: Path) -> dict[str, Any]:
    """The stimulus as the worker reads it (``stimulus_to_dict``), with an audio file it can open: the
    stimulus's own, or its in-memory waveform written to ``folder``."""
    item = stimulus_to_dict(stimulus)
    if (stimulus.audio_path is None or not Path(stimulus.audio_path).is_file()) and stimulus.waveform is not None:
        import soundfile

        path = folder / f"{stimulus.key()}.wav"
        soundfile.write(str(path), np.asarray(stimulus.waveform, dtype=np.float32), stimulus.sample_rate)
        item["audio_path"] = str(path)
    return item
