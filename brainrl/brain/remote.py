"""``RemoteBrainModel``: a BrainModel answered by a ``brainrl serve`` server (brainrl/brain/server.py).

Its identity is the served model's identity, so caches key on the real model. Transient trouble
(connection refused or reset, timeouts, HTTP 429/502/503/504) is retried a bounded number of times with
exponential backoff; anything left over becomes ``Failed`` items with the reason, never zeros. Requests
are split to fit the limits the server advertises in /health (items, characters, seconds, bytes), so an
honest client never meets a 413. The wire format is ``brainrl.brain.wire``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Sequence

from brainrl.brain.base import BrainMap, BrainModel, Failed, Prediction
from brainrl.brain.wire import (
    CLIENT_HEADER,
    TOKEN_ENV,
    TRANSIENT_STATUS,
    ServeLimits,
    decode_array,
    stimulus_to_wire,
    wire_bytes,
    wire_seconds,
)
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)


def client_id() -> str:
    """Who is asking, for the server's per-client counters: host, process and launcher rank (if any)."""
    rank = os.environ.get("RANK")
    return f"{socket.gethostname()}/pid{os.getpid()}" + (f"/rank{rank}" if rank is not None else "")


class RemoteError(RuntimeError):
    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class RemoteBrainModel(BrainModel):
    """Client of a brainrl server at ``url`` (e.g. ``http://127.0.0.1:8765``)."""

    name = "remote"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8765",
        token: str | None = None,
        timeout: float = 600.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        max_items_per_request: int = 64,
    ):
        if retries < 0 or timeout <= 0:
            raise ValueError("retries must be >= 0 and timeout > 0.")
        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_items_per_request = max_items_per_request
        self._identity: dict[str, Any] | None = None
        self._limits: ServeLimits | None = None

    # -- HTTP ----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode("utf-8") if body is not None else None
        headers = {"Content-Type": "application/json", CLIENT_HEADER: client_id()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read()).get("error", "")
            except Exception:  # noqa: BLE001
                detail = ""
            raise RemoteError(f"HTTP {error.code} from {self.url}{path}: {detail}", error.code in TRANSIENT_STATUS) from error
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RemoteError(f"cannot reach {self.url}{path}: {reason}", transient=True) from error
        except json.JSONDecodeError as error:
            raise RemoteError(f"{self.url}{path} answered with something that is not JSON", transient=False) from error

    def _with_retries(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return self._request(method, path, body)
            except RemoteError as error:
                if not error.transient or attempt >= self.retries:
                    raise
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                log.warning("%s (attempt %d of %d); retrying in %.2f s", error, attempt + 1, self.retries + 1, delay)
                time.sleep(delay)
                attempt += 1

    # -- BrainModel ----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        health = self._with_retries("GET", "/health")
        if isinstance(health.get("limits"), dict):
            try:
                self._limits = ServeLimits.from_dict(health["limits"])
            except (TypeError, ValueError) as error:
                log.warning("ignoring the limits %s advertises: %s", self.url, error)
        return health

    def identity(self) -> dict[str, Any]:
        """The served model's identity (raises ``RemoteError`` if the server cannot be reached)."""
        if self._identity is None:
            self._identity = dict(self.health()["identity"])
        return dict(self._identity)

    def limits(self) -> ServeLimits:
        """The server's per-request limits (the defaults if it is older and advertises none)."""
        if self._limits is None:
            try:  # one attempt: the POST that follows has its own retries
                health = self._request("GET", "/health")
                self._limits = ServeLimits.from_dict(health.get("limits") if isinstance(health, dict) else None)
            except (RemoteError, TypeError, ValueError):
                return ServeLimits()
        return self._limits

    def _chunks(self, stimuli: list[Stimulus]) -> list[list[int]]:
        """Positions of consecutive runs of stimuli that fit one request under the server's limits (an item that
        alone breaks a per-item limit travels alone and comes back as that item's error)."""
        limits = self.limits()
        max_items = min(self.max_items_per_request, limits.max_items)
        budget_bytes = limits.max_body_bytes - 4096
        chunks: list[list[int]] = []
        chunk: list[int] = []
        seconds = chars = size = 0.0
        for position, stimulus in enumerate(stimuli):
            s, c, b = wire_seconds(stimulus), len(stimulus.text) + sum(len(w.text) for w in stimulus.words), wire_bytes(stimulus)
            if chunk and (len(chunk) >= max_items or seconds + s > limits.max_seconds_per_request
                          or chars + c > limits.max_chars_per_request or size + b > budget_bytes):
                chunks.append(chunk)
                chunk, seconds, chars, size = [], 0.0, 0.0, 0.0
            chunk.append(position)
            seconds, chars, size = seconds + s, chars + c, size + b
        if chunk:
            chunks.append(chunk)
        return chunks

    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        stimuli = list(stimuli)
        out: list[Prediction | None] = [None] * len(stimuli)
        sendable: list[int] = []
        for index, stimulus in enumerate(stimuli):
            try:
                stimulus.load_waveform()
                sendable.append(index)
            except Exception as error:  # noqa: BLE001 - unreadable audio loses this item only
                out[index] = Failed(f"cannot read the stimulus audio to send it ({type(error).__name__}: {error})")
        for positions in self._chunks([stimuli[i] for i in sendable]) if sendable else []:
            indices = [sendable[p] for p in positions]
            for index, prediction in zip(indices, self._predict_chunk([stimuli[i] for i in indices])):
                out[index] = prediction
        return out  # type: ignore[return-value]

    def _predict_chunk(self, chunk: list[Stimulus]) -> list[Prediction]:
        try:
            reply = self._with_retries("POST", "/predict", {"stimuli": [stimulus_to_wire(s) for s in chunk]})
            items = reply.get("items", [])
            if len(items) != len(chunk):
                raise RemoteError(f"server returned {len(items)} items for {len(chunk)} stimuli", transient=False)
        except RemoteError as error:
            log.warning("remote predict failed for %d items: %s", len(chunk), error)
            return [Failed(f"remote brain model: {error}") for _ in chunk]
        if self._identity is None and isinstance(reply.get("identity"), dict):
            self._identity = dict(reply["identity"])
        out: list[Prediction] = []
        for item in items:
            if "error" in item:
                out.append(Failed(f"remote: {item['error']}"))
                continue
            try:
                out.append(BrainMap(decode_array(item["data_npy_b64"]), provenance=item.get("provenance", {}),
                                    tr=float(item.get("tr", 1.0))))
            except (KeyError, ValueError) as error:
                out.append(Failed(f"remote: unusable map ({error})"))
        return out
