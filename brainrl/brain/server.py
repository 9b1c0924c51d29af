"""Serve any BrainModel over HTTP so several training ranks share one loaded model (``brainrl serve``).

Endpoints (JSON):
  GET  /health   -> {"status", "model", "identity", "versions", "uptime_s", "served_items", "batches",
                     "clients": {client id: {"requests", "items"}}}  (id from the X-Brainrl-Client header)
  POST /predict  <- {"stimuli": [stimulus dict with "waveform_npy_b64"]} or {"texts": [...]} (needs a
                    speech engine on the server)
                 -> {"identity", "items": [{"data_npy_b64", "provenance"} | {"error": reason}]}

Requests from concurrent clients are coalesced by one batcher thread into a single ``predict`` call
(up to ``max_batch`` stimuli, waiting at most ``batch_window_s`` for company), so the model is only
ever called from one thread. Bound to 127.0.0.1 by default; binding anywhere else needs a bearer token.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import os
import queue
import tempfile
import threading
import time
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import BrainMap, BrainModel, Failed
from brainrl.brain.remote import CLIENT_HEADER
from brainrl.brain.tribe.protocol import array_to_npy, npy_to_array, stimulus_from_dict
from brainrl.provenance import versions
from brainrl.stimulus import EmptyTextError, SpeechEngine, Stimulus

log = logging.getLogger(__name__)

TOKEN_ENV = "BRAINRL_SERVE_TOKEN"
MAX_BODY_BYTES = 512 * 1024 * 1024
MAX_TRACKED_CLIENTS = 256


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def encode_array(array: np.ndarray) -> str:
    return base64.b64encode(array_to_npy(array)).decode("ascii")


def decode_array(text: str) -> np.ndarray:
    return npy_to_array(base64.b64decode(text))


class _Batcher:
    """Coalesces concurrent jobs into one ``model.predict`` call, from a single thread."""

    def __init__(self, model: BrainModel, max_batch: int, window_s: float):
        self.model = model
        self.max_batch = max_batch
        self.window_s = window_s
        self.jobs: queue.Queue = queue.Queue()
        self.batches = 0
        self.items = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="brainrl-batcher", daemon=True)
        self._thread.start()

    def submit(self, stimuli: list[Stimulus]) -> Future:
        future: Future = Future()
        self.jobs.put((stimuli, future))
        return future

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            jobs, size = [first], len(first[0])
            deadline = time.monotonic() + self.window_s
            while size < self.max_batch:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                try:
                    job = self.jobs.get(timeout=wait)
                except queue.Empty:
                    break
                jobs.append(job)
                size += len(job[0])
            stimuli = [s for job_stimuli, _ in jobs for s in job_stimuli]
            try:
                results = self.model.predict(stimuli) if stimuli else []
                if len(results) != len(stimuli):
                    raise RuntimeError(f"model returned {len(results)} results for {len(stimuli)} stimuli")
            except Exception as error:  # noqa: BLE001 - every waiting client gets the reason
                log.exception("predict failed for a batch of %d", len(stimuli))
                results = [Failed(f"server model error: {type(error).__name__}: {error}")] * len(stimuli)
            self.batches += 1
            self.items += len(stimuli)
            offset = 0
            for job_stimuli, future in jobs:
                future.set_result(results[offset : offset + len(job_stimuli)])
                offset += len(job_stimuli)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class BrainServer:
    """An HTTP front for one BrainModel. ``serve_forever()`` blocks; ``start()`` runs it in a thread."""

    def __init__(
        self,
        model: BrainModel,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        speech: SpeechEngine | None = None,
        max_batch: int = 64,
        batch_window_s: float = 0.01,
        request_timeout_s: float = 600.0,
        audio_dir: str | Path | None = None,
    ):
        token = token or os.environ.get(TOKEN_ENV) or None
        if not is_loopback(host) and not token:
            raise ValueError(
                f"Refusing to serve on {host!r} without a token: anyone who can reach it could use the model. "
                f"Pass --token (or set {TOKEN_ENV}), or bind to 127.0.0.1."
            )
        self.model = model
        self.token = token
        self.speech = speech
        self.request_timeout_s = request_timeout_s
        self.audio_dir = Path(audio_dir or tempfile.mkdtemp(prefix="brainrl-serve-audio-"))
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        self.identity = model.identity()
        if speech is not None:
            self.identity_with_speech = {**self.identity, "speech": speech.describe()}
        self.started = time.time()
        #: POST /predict requests and items per client (e.g. one per training rank), oldest dropped past 256
        self.clients: dict[str, dict[str, int]] = {}
        self._clients_lock = threading.Lock()
        self.batcher = _Batcher(model, max_batch, batch_window_s)
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> "BrainServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="brainrl-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.batcher.stop()

    # -- request handling ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model": getattr(self.model, "name", type(self.model).__name__),
            "identity": self.identity,
            "speech": self.speech.describe() if self.speech is not None else None,
            "versions": versions(),
            "uptime_s": round(time.time() - self.started, 3),
            "served_items": self.batcher.items,
            "batches": self.batcher.batches,
            "clients": self.client_counts(),
        }

    def count_client(self, client: str, n_items: int) -> None:
        with self._clients_lock:
            entry = self.clients.pop(client, {"requests": 0, "items": 0})
            entry["requests"] += 1
            entry["items"] += n_items
            self.clients[client] = entry  # re-inserted: the dict's order is last use
            while len(self.clients) > MAX_TRACKED_CLIENTS:
                self.clients.pop(next(iter(self.clients)))

    def client_counts(self) -> dict[str, dict[str, int]]:
        with self._clients_lock:
            return {client: dict(entry) for client, entry in self.clients.items()}

    def _stimuli_from_request(self, body: dict[str, Any]) -> tuple[list[Stimulus | None], list[str | None]]:
        stimuli: list[Stimulus | None] = []
        errors: list[str | None] = []
        if "texts" in body:
            if self.speech is None:
                raise ValueError("this server has no speech engine; send stimuli, or start it with --speech")
            texts = body["texts"]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("'texts' must be a list of strings")
            for text in texts:
                try:
                    stimuli.append(self.speech.synthesize_one(text))
                    errors.append(None)
                except (EmptyTextError, RuntimeError, ValueError) as error:
                    stimuli.append(None)
                    errors.append(f"speech failed: {error}")
            return stimuli, errors
        items = body.get("stimuli")
        if not isinstance(items, list):
            raise ValueError("the body needs 'stimuli' (a list) or 'texts'")
        for item in items:
            try:
                waveform = decode_array(item["waveform_npy_b64"]).astype(np.float32) if item.get("waveform_npy_b64") else None
                stimulus = stimulus_from_dict({**item, "audio_path": None}, waveform=waveform)
                if waveform is None:
                    raise ValueError("a remote stimulus needs its audio as 'waveform_npy_b64'")
                stimulus.audio_path = self._write_audio(stimulus)
                stimuli.append(stimulus)
                errors.append(None)
            except (KeyError, ValueError, TypeError) as error:
                stimuli.append(None)
                errors.append(f"bad stimulus: {error}")
        return stimuli, errors

    def _write_audio(self, stimulus: Stimulus) -> Path:
        import soundfile

        path = self.audio_dir / f"{stimulus.key()}-{len(stimulus.waveform)}.wav"
        if not path.exists():
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp.wav")
            soundfile.write(str(tmp), stimulus.waveform, stimulus.sample_rate)
            os.replace(tmp, path)
        return path

    def predict_body(self, body: dict[str, Any]) -> dict[str, Any]:
        stimuli, errors = self._stimuli_from_request(body)
        valid = [s for s in stimuli if s is not None]
        results = self.batcher.submit(valid).result(timeout=self.request_timeout_s) if valid else []
        it = iter(results)
        items = []
        for stimulus, error in zip(stimuli, errors):
            if stimulus is None:
                items.append({"error": error})
                continue
            result = next(it)
            if isinstance(result, BrainMap):
                items.append({"data_npy_b64": encode_array(result.data), "provenance": result.provenance, "tr": result.tr})
            else:
                reason = result.reason if isinstance(result, Failed) else f"unexpected result {type(result).__name__}"
                items.append({"error": reason})
        identity = self.identity_with_speech if "texts" in body else self.identity
        return {"identity": identity, "items": items}

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                log.debug("%s " + format, self.address_string(), *args)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload, default=str).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if not server.token:
                    return True
                given = self.headers.get("Authorization", "")
                expected = f"Bearer {server.token}"
                if hmac.compare_digest(given.encode(), expected.encode()):
                    return True
                self._send(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"})
                return False

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/health":
                    self._send(200, server.health())
                else:
                    self._send(404, {"error": f"no such endpoint {self.path}; use GET /health or POST /predict"})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                if self.path.rstrip("/") != "/predict":
                    self._send(404, {"error": f"no such endpoint {self.path}; use POST /predict"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    if length <= 0 or length > MAX_BODY_BYTES:
                        raise ValueError(f"Content-Length must be 1..{MAX_BODY_BYTES}")
                    body = json.loads(self.rfile.read(length))
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    reply = server.predict_body(body)
                    server.count_client(self.headers.get(CLIENT_HEADER) or self.address_string(),
                                        len(reply["items"]))
                    self._send(200, reply)
                except (ValueError, json.JSONDecodeError) as error:
                    self._send(400, {"error": str(error)})
                except TimeoutError:
                    self._send(503, {"error": "the model did not answer in time"})
                except Exception as error:  # noqa: BLE001
                    log.exception("request failed")
                    self._send(500, {"error": f"{type(error).__name__}: {error}"})

        return Handler


def serve(model: BrainModel, **kwargs: Any) -> BrainServer:
    """Start a server in a background thread and return it (``close()`` to stop)."""
    return BrainServer(model, **kwargs).start()


def stimuli_payload(stimuli: Sequence[Stimulus]) -> list[dict[str, Any]]:
    """Stimuli as JSON for POST /predict, audio included (the server may be another machine)."""
    from brainrl.brain.tribe.protocol import stimulus_to_dict

    out = []
    for stimulus in stimuli:
        item = stimulus_to_dict(stimulus)
        item["waveform_npy_b64"] = encode_array(np.asarray(stimulus.load_waveform(), dtype=np.float32))
        out.append(item)
    return out
