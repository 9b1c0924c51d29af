"""The HTTP wire format of ``brainrl serve``, shared by the server (brain/server.py) and its client
(brain/remote.py), so neither imports the other.

  GET  /health   -> {"status", "model", "identity", "speech", "versions", "uptime_s", "served_items",
                     "batches", "clients": {id: {"requests", "items"}}, "limits": ServeLimits as a dict}
  POST /predict  <- {"stimuli": [stimulus dict + "waveform_npy_b64"]} or {"texts": [...]} (the server
                    needs a speech engine for texts)
                 -> {"identity", "items": [{"data_npy_b64", "provenance", "tr"} | {"error": reason}]}

A stimulus on the wire is ``brainrl.brain.tribe.protocol.stimulus_to_dict`` plus its audio as a base64
``.npy``. The server trusts none of the numbers in it: the duration is the audio's length over its
sample rate, word timings must lie inside that audio, and every item and request is held to
``ServeLimits`` (what is wrong with one item comes back as that item's error, not the request's).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

from brainrl.brain.tribe.protocol import array_to_npy, npy_to_array, stimulus_from_dict, stimulus_to_dict
from brainrl.stimulus import Stimulus
from brainrl.stimulus.timing import check_words

#: header naming the calling process (host/pid/rank) for the server's per-client counters
CLIENT_HEADER = "X-Brainrl-Client"
#: environment variable holding the bearer token, read by both sides
TOKEN_ENV = "BRAINRL_SERVE_TOKEN"
#: statuses a client retries (with backoff): the request timed out on the way in, or the server is busy,
#: restarting or behind a proxy
TRANSIENT_STATUS = frozenset({408, 429, 502, 503, 504})
#: slack allowed between a word's end and the end of the audio (rounding of word times)
WORD_SLACK_S = 0.05


@dataclass(frozen=True)
class ServeLimits:
    """What one POST /predict may ask of the server. Anything over a per-request cap is refused with a
    4xx naming the cap; anything wrong with one item becomes that item's error.

    Seconds are computed from the audio (samples / sample rate), never taken from the client. The
    defaults hold a reply to ~50 MB of maps (600 s x 20,484 vertices x 4 bytes) and leave room for
    brainrl's own speech caps (stimulus.MAX_CHARS, MAX_SECONDS) several times over.
    """

    max_items: int = 256
    max_chars_per_item: int = 20_000
    max_chars_per_request: int = 400_000
    max_words_per_item: int = 5_000
    max_seconds_per_item: float = 300.0
    max_seconds_per_request: float = 600.0
    min_sample_rate: int = 8_000
    max_sample_rate: int = 48_000
    max_body_bytes: int = 128 * 2**20

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"ServeLimits.{f.name} must be a positive number, got {value!r}.")
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError("ServeLimits.min_sample_rate must not exceed max_sample_rate.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ServeLimits":
        """Limits a server advertised in /health (unknown keys from newer servers are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})


class RequestRefused(ValueError):
    """A whole request breaks a limit or the format; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def encode_array_bytes(array: np.ndarray) -> bytes:
    """An array as base64 of its ``.npy`` bytes (ASCII bytes, ready for a JSON string)."""
    return base64.b64encode(array_to_npy(array))


def encode_array(array: np.ndarray) -> str:
    return encode_array_bytes(array).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError) as error:
        raise ValueError(f"not base64: {error}") from error
    return npy_to_array(raw)


def stimulus_to_wire(stimulus: Stimulus) -> dict[str, Any]:
    """One stimulus as JSON for POST /predict, audio included (the server may be another machine)."""
    item = stimulus_to_dict(stimulus)
    item["audio_path"] = None  # a path means nothing on the server
    item["waveform_npy_b64"] = encode_array(np.asarray(stimulus.load_waveform(), dtype=np.float32))
    return item


def stimuli_payload(stimuli: Sequence[Stimulus]) -> list[dict[str, Any]]:
    return [stimulus_to_wire(s) for s in stimuli]


def wire_seconds(stimulus: Stimulus) -> float:
    """Seconds a stimulus costs on the wire, as the server will compute them (from the audio)."""
    waveform = stimulus.load_waveform()
    return len(waveform) / float(stimulus.sample_rate) if stimulus.sample_rate > 0 else 0.0


def wire_bytes(stimulus: Stimulus) -> int:
    """Rough size of a stimulus in a request body (float32 audio in base64, text and words in JSON)."""
    n_samples = len(stimulus.load_waveform())
    return int(n_samples * 4 * 4 / 3) + 4 * len(stimulus.text) + 64 * len(stimulus.words) + 1024


def item_chars(item: dict[str, Any]) -> int:
    """Characters of text an item carries (its text and its words' texts), for the per-request cap."""
    text = item.get("text")
    words = item.get("words")
    n = len(text) if isinstance(text, str) else 0
    if isinstance(words, list):
        n += sum(len(w[0]) for w in words if isinstance(w, (list, tuple)) and w and isinstance(w[0], str))
    return n


def stimulus_from_wire(item: Any, limits: ServeLimits) -> Stimulus:
    """A stimulus a client sent, checked against ``limits``; raises ``ValueError`` naming the problem.

    The duration is derived from the audio; the client's ``duration`` is ignored.
    """
    if not isinstance(item, dict):
        raise ValueError("each stimulus must be a JSON object")
    text = item.get("text")
    if not isinstance(text, str):
        raise ValueError("'text' must be a string")
    if item_chars(item) > limits.max_chars_per_item:
        raise ValueError(f"{item_chars(item)} characters of text and words exceed max_chars_per_item="
                         f"{limits.max_chars_per_item}")
    words = item.get("words")
    if not isinstance(words, list):
        raise ValueError("'words' must be a list of [text, start, duration, char_start, char_end]")
    if len(words) > limits.max_words_per_item:
        raise ValueError(f"{len(words)} words exceed max_words_per_item={limits.max_words_per_item}")
    sample_rate = item.get("sample_rate")
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not (
            limits.min_sample_rate <= sample_rate <= limits.max_sample_rate):
        raise ValueError(f"sample_rate must be an integer in [{limits.min_sample_rate}, {limits.max_sample_rate}] Hz, "
                         f"got {sample_rate!r}")
    encoded = item.get("waveform_npy_b64")
    if not isinstance(encoded, str) or not encoded:
        raise ValueError("a remote stimulus needs its audio as 'waveform_npy_b64' (a base64 .npy of float samples)")
    max_samples = int(limits.max_seconds_per_item * sample_rate)
    if len(encoded) * 3 // 4 > max_samples * 8 + 4096:  # float64 at most, plus the .npy header
        raise ValueError(f"the audio is longer than max_seconds_per_item={limits.max_seconds_per_item:g} s")
    waveform = decode_array(encoded)
    if waveform.ndim != 1 or waveform.dtype.kind != "f":
        raise ValueError(f"the audio must be a 1-D float array, got {waveform.ndim}-D {waveform.dtype}")
    if waveform.size == 0:
        raise ValueError("the audio is empty")
    waveform = waveform.astype(np.float32, copy=False)
    if not np.isfinite(waveform).all():
        raise ValueError("the audio holds NaN or infinite samples")
    duration = waveform.size / sample_rate
    if duration > limits.max_seconds_per_item:
        raise ValueError(f"{duration:.1f} s of audio exceed max_seconds_per_item={limits.max_seconds_per_item:g}")
    stimulus = stimulus_from_dict({**item, "audio_path": None, "duration": duration}, waveform=waveform)
    check_words(stimulus.words, duration + WORD_SLACK_S)
    return stimulus
