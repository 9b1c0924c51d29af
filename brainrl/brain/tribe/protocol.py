"""The local wire format between the training process and the TRIBE worker (docs/tribe.md).

A message is one frame::

    b"BRW1" | uint32 big-endian header length | header (UTF-8 JSON) | blob 0 | blob 1 | ...

The header lists the byte length of each blob in ``"blobs"``; a blob is an ``.npy`` file (read with
``allow_pickle=False``). The magic catches a worker that printed to its protocol stream. Every read
has a deadline: a silent or dead peer raises ``WorkerTimeout`` or ``WorkerGone`` instead of hanging.
"""

from __future__ import annotations

import io
import json
import os
import select
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from brainrl.stimulus import Stimulus, Word

MAGIC = b"BRW1"
PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024 * 1024


class ProtocolError(RuntimeError):
    """The peer sent something that is not a frame."""


class WorkerGone(ProtocolError):
    """The peer closed its end (it exited or crashed)."""


class WorkerTimeout(TimeoutError):
    """The peer sent nothing in time."""


def array_to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_to_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_frame(header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> bytes:
    blobs = [array_to_npy(a) for a in (arrays or [])]
    header = dict(header, blobs=[len(b) for b in blobs])
    head = json.dumps(header, ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack(">I", len(head)), head, *blobs])


def write_frame(stream: BinaryIO, header: dict[str, Any], arrays: list[np.ndarray] | None = None) -> None:
    stream.write(encode_frame(header, arrays))
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise WorkerTimeout(f"no data from the worker within the deadline ({remaining} bytes missing)")
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise WorkerGone("the worker closed its output (it exited or crashed)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, timeout: float | None = None) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Read one frame from a raw file descriptor, within ``timeout`` seconds for the whole frame."""
    deadline = None if timeout is None else time.monotonic() + timeout
    prefix = _read_exact(fd, 8, deadline)
    if prefix[:4] != MAGIC:
        raise ProtocolError(f"bad frame start {prefix!r}: something else wrote to the protocol stream")
    (length,) = struct.unpack(">I", prefix[4:])
    if length > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {length} bytes is too large")
    header = json.loads(_read_exact(fd, length, deadline).decode("utf-8"))
    arrays = [npy_to_array(_read_exact(fd, int(n), deadline)) for n in header.pop("blobs", [])]
    return header, arrays


# -- stimuli on the wire -----------------------------------------------------------------------------
def stimulus_to_dict(stimulus: Stimulus) -> dict[str, Any]:
    """Everything but the in-memory waveform; the worker reads ``audio_path`` (same machine)."""
    return {
        "text": stimulus.text,
        "words": [[w.text, w.start, w.duration, w.char_start, w.char_end] for w in stimulus.words],
        "audio_path": str(stimulus.audio_path) if stimulus.audio_path is not None else None,
        "sample_rate": stimulus.sample_rate,
        "duration": stimulus.duration,
        "engine": stimulus.engine,
        "engine_version": stimulus.engine_version,
        "voice": stimulus.voice,
        "truncated": stimulus.truncated,
    }


def stimulus_from_dict(data: dict[str, Any], waveform: np.ndarray | None = None) -> Stimulus:
    try:
        words = [Word(str(t), float(s), float(d), int(cs), int(ce)) for t, s, d, cs, ce in data["words"]]
        return Stimulus(
            text=str(data["text"]),
            words=words,
            audio_path=Path(data["audio_path"]) if data.get("audio_path") else None,
            sample_rate=int(data["sample_rate"]),
            duration=float(data["duration"]),
            engine=str(data["engine"]),
            engine_version=str(data["engine_version"]),
            voice=str(data.get("voice", "")),
            truncated=bool(data.get("truncated", False)),
            waveform=waveform,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"malformed stimulus: {error!r}") from error
