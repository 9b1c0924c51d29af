"""``RemoteBrainModel``: a BrainModel answered by a ``brainrl serve`` server (brainrl/brain/server.py).

Its identity is the served model's identity, so caches key on the real model. Transient trouble
(connection refused or reset, timeouts, HTTP 429/502/503/504) is retried a bounded number of times with
exponential backoff; anything left over becomes ``Failed`` items with the reason, never zeros.
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
from brainrl.stimulus import Stimulus

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {429, 502, 503, 504}
CLIENT_HEADER = "X-Brainrl-Client"


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
        self.token = token or os.environ.get("BRAINRL_SERVE_TOKEN") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_items_per_request = max_items_per_request
        self._identity: dict[str, Any] | None = None

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
        return self._with_retries("GET", "/health")

    def identity(self) -> dict[str, Any]:
        """The served model's identity (raises ``RemoteError`` if the server cannot be reached)."""
        if self._identity is None:
            self._identity = dict(self.health()["identity"])
        return dict(self._identity)

    def predict(self, stimuli: Sequence[Stimulus]) -> list[Prediction]:
        from brainrl.brain.server import decode_array, stimuli_payload

        stimuli = list(stimuli)
        out: list[Prediction] = []
        for begin in range(0, len(stimuli), self.max_items_per_request):
            chunk = stimuli[begin : begin + self.max_items_per_request]
            try:
                reply = self._with_retries("POST", "/predict", {"stimuli": stimuli_payload(chunk)})
                items = reply.get("items", [])
                if len(items) != len(chunk):
                    raise RemoteError(f"server returned {len(items)} items for {len(chunk)} stimuli", transient=False)
            except RemoteError as error:
                log.warning("remote predict failed for %d items: %s", len(chunk), error)
                out.extend(Failed(f"remote brain model: {error}") for _ in chunk)
                continue
            if self._identity is None and isinstance(reply.get("identity"), dict):
                self._identity = dict(reply["identity"])
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
