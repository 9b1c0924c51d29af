"""Serve any BrainModel over HTTP so several training ranks share one loaded model (``brainrl serve``).

The wire format (endpoints, JSON bodies, limits) lives in ``brainrl.brain.wire``. The HTTP side is
Starlette under uvicorn (docs/multi-gpu.md says why): an asyncio server, so slow or idle connections cost
a socket, not a thread. On top of what uvicorn gives (listen backlog, header size cap, keep-alive timeout,
a connection cap answered with 503), this module adds what a server that one careless client must not take
down needs, in the order a request meets them:

1. a deadline for the request line and headers (``header_timeout_s``), before any other work;
2. the bearer token, checked on the headers alone;
3. ``Content-Length`` required and at most ``limits.max_body_bytes`` (411/413), and a memory budget
   shared by all requests in flight (``max_inflight_bytes``): a request is charged ``MEMORY_PER_BODY_BYTE``
   times the body bytes it has sent (for its parsed audio, maps and reply), until its reply is sent, at
   most the whole budget; over it, it waits, then 503 (so a slow sender holds only what it sent);
4. a deadline for the body (``body_timeout_s`` plus one second per MB);
5. per-request caps on items, characters and seconds of audio (seconds computed from the audio), 413/400
   naming the cap; per-item problems (a sample rate of 0, word times outside the audio) become that item's
   error, never the request's;
6. one batcher thread that coalesces concurrent requests into ``model.predict`` calls (dynamic batching:
   up to ``max_batch`` stimuli, waiting at most ``batch_window_s`` for company);
7. a deadline for sending the reply (``send_timeout_s``): a client that does not read loses its connection.

A client that goes away at any point is dropped with one debug line, never a traceback. Bound to
127.0.0.1 by default; binding anywhere else needs a bearer token.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import queue
import socket
import struct
import threading
import time
from concurrent.futures import Future
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from brainrl.brain.base import BrainMap, BrainModel, Failed
from brainrl.brain.wire import (
    CLIENT_HEADER,
    TOKEN_ENV,
    RequestRefused,
    ServeLimits,
    encode_array_bytes,
    item_chars,
    stimulus_from_wire,
)
from brainrl.provenance import versions
from brainrl.stimulus import EmptyTextError, SpeechEngine, Stimulus

log = logging.getLogger(__name__)

MAX_TRACKED_CLIENTS = 256
#: Memory a request costs per byte of its body, until its reply is sent: the body (1), its parsed JSON and
#: audio (~1.5), and maps plus the JSON reply, which at the lowest sample rate allowed (8 kHz: 43 KB of body
#: per second of audio against 82 KB of float32 map and 2 x 109 KB of base64 reply) come to ~7.
MEMORY_PER_BODY_BYTE = 10
DEFAULT_INFLIGHT_BYTES = 1 << 30
#: ASGI scope extension through which a handler can drop its connection at once
ABORT_EXTENSION = "brainrl.abort"
_INCOMPLETE_REPLY = "ASGI callable returned without completing response."


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
                if not future.cancelled():
                    future.set_result(results[offset : offset + len(job_stimuli)])
                offset += len(job_stimuli)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _ByteBudget:
    """Bytes of request bodies held in memory at once, shared by all requests (asyncio, one loop)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.used = 0
        self._changed: asyncio.Condition | None = None

    async def acquire(self, n: int, timeout: float) -> bool:
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.used + n <= self.capacity), timeout)
            except TimeoutError:
                return False
            self.used += n
            return True

    async def release(self, n: int) -> None:
        assert self._changed is not None
        async with self._changed:
            self.used -= n
            self._changed.notify_all()


def _deadline_protocol(base: type, header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol plus a deadline for each request's line and headers.

    uvicorn arms no timer until a first response is sent, and any byte cancels its keep-alive timer, so
    a client that connects and sends nothing (or one header byte at a time) would hold its connection
    for ever. Here every connection, and every keep-alive connection after each response, must deliver
    a complete request head within ``header_timeout_s`` or be closed.
    """

    class DeadlineProtocol(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
            super().connection_made(transport)
            self._arm_head_deadline()

        def connection_lost(self, exc) -> None:  # type: ignore[no-untyped-def]
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm_head_deadline()  # the head arrived; the app's own deadlines take over
                # the app may need to drop the connection with its unsent buffer (a client that does not read)
                self.scope.setdefault("extensions", {})[ABORT_EXTENSION] = self._reset_connection

        def _reset_connection(self) -> None:
            """Drop the connection now, with a reset, and the reply bytes queued for it in the process and
            in the kernel (a plain close sends them first, at whatever pace the client reads)."""
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            self.transport.abort()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_deadline_passed)

        def _disarm_head_deadline(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_deadline_passed(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                log.debug("closing %s: no complete request head within %.1f s", self.client, header_timeout_s)
                self.transport.abort()

    return DeadlineProtocol


class _QuietAbortedClients(logging.Filter):
    """uvicorn reports a reply we stopped sending to a client that does not read as an error; our own
    debug line already says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _INCOMPLETE_REPLY


_QUIET_ABORTED_CLIENTS = _QuietAbortedClients()


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
        limits: ServeLimits | None = None,
        header_timeout_s: float = 10.0,
        body_timeout_s: float = 30.0,
        send_timeout_s: float = 60.0,
        queue_timeout_s: float = 30.0,
        max_inflight_bytes: int | None = None,
        max_connections: int = 1000,
        backlog: int = 2048,
    ):
        token = token or os.environ.get(TOKEN_ENV) or None
        if not is_loopback(host) and not token:
            raise ValueError(
                f"Refusing to serve on {host!r} without a token: anyone who can reach it could use the model. "
                f"Pass --token (or set {TOKEN_ENV}), or bind to 127.0.0.1."
            )
        for name, value in (("max_batch", max_batch), ("max_connections", max_connections), ("backlog", backlog)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        for name, value in (("request_timeout_s", request_timeout_s), ("header_timeout_s", header_timeout_s),
                            ("body_timeout_s", body_timeout_s), ("send_timeout_s", send_timeout_s),
                            ("queue_timeout_s", queue_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
        if batch_window_s < 0:
            raise ValueError(f"batch_window_s must be >= 0, got {batch_window_s!r}.")
        self.model = model
        self.token = token
        self.speech = speech
        self.limits = limits or ServeLimits()
        self.request_timeout_s = request_timeout_s
        self.body_timeout_s = body_timeout_s
        self.send_timeout_s = send_timeout_s
        self.queue_timeout_s = queue_timeout_s
        if max_inflight_bytes is not None and not (isinstance(max_inflight_bytes, int) and max_inflight_bytes > 0):
            raise ValueError(f"max_inflight_bytes must be a positive integer, got {max_inflight_bytes!r}.")
        #: memory all requests in flight may use together (see MEMORY_PER_BODY_BYTE); one request alone
        #: is always admitted, whatever its size within the limits
        self.budget = _ByteBudget(max_inflight_bytes or DEFAULT_INFLIGHT_BYTES)
        self.identity = model.identity()
        self.identity_with_speech = {**self.identity, "speech": speech.describe()} if speech is not None else None
        self.started = time.time()
        #: POST /predict requests and items per client (e.g. one per training rank), oldest dropped past 256
        self.clients: dict[str, dict[str, int]] = {}
        self._clients_lock = threading.Lock()
        #: requests refused or dropped, by reason (for /health and the tests)
        self.refused: dict[str, int] = {}
        self.batcher = _Batcher(model, max_batch, batch_window_s)
        self._socket = socket.create_server((host, port), backlog=backlog, reuse_port=False)
        self._uvicorn = self._make_uvicorn(header_timeout_s, max_connections, backlog)
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------------------
    def _make_uvicorn(self, header_timeout_s: float, max_connections: int, backlog: int):
        import uvicorn
        from uvicorn.protocols.http.h11_impl import H11Protocol

        logging.getLogger("uvicorn.error").addFilter(_QUIET_ABORTED_CLIENTS)  # the same object: added once
        config = uvicorn.Config(
            self.asgi_app(),
            http=_deadline_protocol(H11Protocol, header_timeout_s),
            lifespan="off",
            log_config=None,
            access_log=False,
            backlog=backlog,
            limit_concurrency=max_connections,
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=64 * 1024,
        )
        return uvicorn.Server(config)

    @property
    def address(self) -> tuple[str, int]:
        return self._socket.getsockname()[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> "BrainServer":
        self._thread = threading.Thread(target=self.serve_forever, name="brainrl-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._uvicorn.started:
            raise RuntimeError("the brainrl server did not start within 30 s")
        return self

    def serve_forever(self) -> None:
        """Serve until ``close()`` (from another thread) or Ctrl-C (in the main thread)."""
        self._uvicorn.run(sockets=[self._socket])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()
        self.batcher.stop()

    # -- state ----------------------------------------------------------------------------------------
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
            "limits": self.limits.to_dict(),
            "refused": dict(self.refused),
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

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    # -- the work of one request (runs in worker threads, never on the event loop) --------------------
    def parse_body(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise RequestRefused(f"the body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise RequestRefused("the body must be a JSON object with 'stimuli' or 'texts'")
        return body

    def stimuli_from_request(self, body: dict[str, Any]) -> tuple[list[Stimulus | None], list[str | None]]:
        """One stimulus (or None) and one error (or None) per item; raises ``RequestRefused`` for a
        request that breaks a per-request cap."""
        limits = self.limits
        key = "texts" if "texts" in body else "stimuli"
        items = body.get(key)
        if not isinstance(items, list):
            raise RequestRefused("the body needs 'stimuli' (a list of stimulus objects) or 'texts' (a list of strings)")
        if len(items) > limits.max_items:
            raise RequestRefused(f"{len(items)} items exceed max_items={limits.max_items} per request; "
                                 "send fewer at a time", status=413)
        if key == "texts":
            if self.speech is None:
                raise RequestRefused("this server has no speech engine; send stimuli, or start it with --speech")
            if not all(isinstance(t, str) for t in items):
                raise RequestRefused("'texts' must be a list of strings")
            chars = sum(len(t) for t in items)
        else:
            chars = sum(item_chars(item) for item in items if isinstance(item, dict))
        if chars > limits.max_chars_per_request:
            raise RequestRefused(f"{chars} characters exceed max_chars_per_request={limits.max_chars_per_request}; "
                                 "send fewer or shorter items", status=413)
        stimuli: list[Stimulus | None] = []
        errors: list[str | None] = []
        for item in items:
            try:
                if key == "texts":
                    if len(item) > limits.max_chars_per_item:
                        raise ValueError(f"{len(item)} characters exceed max_chars_per_item={limits.max_chars_per_item}")
                    stimulus = self.speech.synthesize_one(item)  # type: ignore[union-attr]
                    seconds = stimulus.duration
                    if seconds > limits.max_seconds_per_item:
                        raise ValueError(f"{seconds:.1f} s of speech exceed max_seconds_per_item="
                                         f"{limits.max_seconds_per_item:g}")
                else:
                    stimulus = stimulus_from_wire(item, limits)
                stimuli.append(stimulus)
                errors.append(None)
            except (EmptyTextError, RuntimeError, ValueError, TypeError, KeyError) as error:
                stimuli.append(None)
                errors.append(f"{'speech failed' if key == 'texts' else 'bad stimulus'}: {error}")
        seconds = sum(s.duration for s in stimuli if s is not None)
        if seconds > limits.max_seconds_per_request:
            raise RequestRefused(f"{seconds:.1f} s of audio exceed max_seconds_per_request="
                                 f"{limits.max_seconds_per_request:g}; send fewer items at a time", status=413)
        return stimuli, errors

    def encode_reply(self, body: dict[str, Any], stimuli: list[Stimulus | None], errors: list[str | None],
                     results: list) -> bytes:
        """The JSON reply as bytes, assembled from pieces so that the maps' base64 text is held once."""
        def dump(value: Any) -> bytes:
            return json.dumps(value, default=str).encode("utf-8")

        it = iter(results)
        identity = self.identity_with_speech if "texts" in body else self.identity
        pieces = [b'{"identity": ', dump(identity), b', "items": [']
        for index, (stimulus, error) in enumerate(zip(stimuli, errors)):
            if index:
                pieces.append(b", ")
            if stimulus is None:
                pieces.append(dump({"error": error}))
                continue
            result = next(it)
            if isinstance(result, BrainMap):
                pieces += [b'{"data_npy_b64": "', encode_array_bytes(result.data), b'", "provenance": ',
                           dump(result.provenance), b', "tr": ', dump(result.tr), b"}"]
            else:
                reason = result.reason if isinstance(result, Failed) else f"unexpected result {type(result).__name__}"
                pieces.append(dump({"error": reason}))
        pieces.append(b"]}")
        return b"".join(pieces)

    def predict_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole POST /predict work for a parsed body, synchronously (for tests and in-process use)."""
        stimuli, errors = self.stimuli_from_request(body)
        valid = [s for s in stimuli if s is not None]
        results = self.batcher.submit(valid).result(timeout=self.request_timeout_s) if valid else []
        return json.loads(self.encode_reply(body, stimuli, errors, results))

    # -- HTTP -----------------------------------------------------------------------------------------
    def asgi_app(self):
        server = self

        def error(status: int, message: str, reason: str, close: bool = False) -> JSONResponse:
            server._refuse(reason)
            headers = {"connection": "close"} if close else None  # a body we did not read may follow
            return JSONResponse({"error": message}, status_code=status, headers=headers)

        def authorized(request: Request) -> bool:
            if not server.token:
                return True
            given = request.headers.get("authorization", "")
            return hmac.compare_digest(given.encode(), f"Bearer {server.token}".encode())

        async def health(request: Request) -> Response:
            if not authorized(request):
                return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", "unauthorized")
            return JSONResponse(server.health())

        async def read_body(request: Request, length: int, charge: "_Charge") -> bytes:
            """The body, charged to the memory budget as it arrives (a slow client holds only what it sent)."""
            chunks, received, queued = [], 0, 0.0
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(server.body_timeout_s + length / 2**20) as deadline:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > length:
                        raise RequestRefused("the body is longer than its Content-Length")
                    due, waiting_since = deadline.when(), loop.time()
                    deadline.reschedule(None)  # time spent waiting for the budget is not the client's
                    admitted = await charge.add(len(chunk) * MEMORY_PER_BODY_BYTE, server.queue_timeout_s - queued)
                    queued += loop.time() - waiting_since  # at most queue_timeout_s in all, per request
                    deadline.reschedule(due + loop.time() - waiting_since)
                    if not admitted:
                        raise _Busy()
                    chunks.append(chunk)
            if received != length:
                raise ClientDisconnect()
            return b"".join(chunks)

        async def predict(request: Request) -> Response:
            if not authorized(request):
                return error(401, "missing or wrong bearer token (Authorization: Bearer <token>)", "unauthorized",
                             close=True)
            declared = request.headers.get("content-length")
            if declared is None or not declared.isdigit():
                return error(411, "POST /predict needs a Content-Length header", "no_length", close=True)
            length = int(declared)
            if length == 0:
                return error(400, "the body is empty; send JSON with 'stimuli' or 'texts'", "bad_request")
            if length > server.limits.max_body_bytes:
                return error(413, f"a body of {length} bytes exceeds max_body_bytes={server.limits.max_body_bytes}; "
                                  "send fewer items at a time", "too_large", close=True)
            charge = _Charge(server.budget)
            try:
                try:
                    raw = await read_body(request, length, charge)
                except TimeoutError:
                    server._refuse("body_timeout")
                    log.debug("dropping %s: body not received in time", request.client)
                    return Response(status_code=408, headers={"connection": "close"})
                except ClientDisconnect:
                    server._refuse("client_gone")
                    log.debug("client %s went away while sending its body", request.client)
                    return Response(status_code=400, headers={"connection": "close"})
                except _Busy:
                    return error(503, "the server is busy (memory budget for requests in flight is in use); "
                                      "retry later", "busy", close=True)
                loop = asyncio.get_running_loop()
                try:
                    body = await loop.run_in_executor(None, server.parse_body, raw)
                    del raw
                    stimuli, errors = await loop.run_in_executor(None, server.stimuli_from_request, body)
                except RequestRefused as refused:
                    return error(refused.status, str(refused), "refused")
                valid = [s for s in stimuli if s is not None]
                if valid:
                    future = server.batcher.submit(valid)
                    try:
                        results = await asyncio.wait_for(asyncio.wrap_future(future), server.request_timeout_s)
                    except TimeoutError:
                        return error(503, "the model did not answer in time", "model_timeout")
                else:
                    results = []
                reply = await loop.run_in_executor(None, server.encode_reply, body, stimuli, errors, results)
                del body, stimuli, results
                server.count_client(request.headers.get(CLIENT_HEADER) or str(request.client), len(errors))
                return _TimedResponse(reply, server.send_timeout_s, charge.hand_over(),
                                      on_timeout=lambda: server._refuse("send_timeout"), media_type="application/json")
            finally:
                await charge.release()

        async def not_found(request: Request) -> Response:
            return JSONResponse({"error": f"no such endpoint {request.method} {request.url.path}; "
                                          "use GET /health or POST /predict"}, status_code=404)

        routes = [Route("/health", health, methods=["GET"]), Route("/health/", health, methods=["GET"]),
                  Route("/predict", predict, methods=["POST"]), Route("/predict/", predict, methods=["POST"])]
        app = Starlette(routes=routes)
        app.add_exception_handler(404, not_found)
        app.add_exception_handler(405, not_found)
        return _GuardedApp(app, server)


class _Busy(Exception):
    """The memory budget stayed full for ``queue_timeout_s``."""


class _Charge:
    """What one request holds of the server's memory budget; released once, by whoever holds it last."""

    def __init__(self, budget: _ByteBudget):
        self.budget = budget
        self.held = 0

    async def add(self, n: int, timeout: float) -> bool:
        n = min(n, self.budget.capacity - self.held)  # one request alone always fits
        if n <= 0:
            return True
        if timeout <= 0:
            timeout = 0.001  # no waiting left: only what is free now
        if not await self.budget.acquire(n, timeout):
            return False
        self.held += n
        return True

    def hand_over(self) -> "_Charge":
        """A charge carrying this one's bytes (for the reply, released after sending); this one is emptied."""
        other = _Charge(self.budget)
        other.held, self.held = self.held, 0
        return other

    async def release(self) -> None:
        if self.held:
            held, self.held = self.held, 0
            await self.budget.release(held)


class _TimedResponse(Response):
    """A reply that a client must read within ``send_timeout_s`` (else its connection is dropped).

    The body goes out in chunks: uvicorn waits for its write buffer to drain before each chunk, so a
    client that stops reading stops the reply (and its deadline fires) instead of the whole reply
    waiting in the server's memory for as long as the client likes."""

    chunk_bytes = 256 * 1024

    def __init__(self, content: bytes, send_timeout_s: float, charge: _Charge, on_timeout=None, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.send_timeout_s = send_timeout_s
        self.charge = charge
        self.on_timeout = on_timeout

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        try:
            await self._send_in_chunks(scope, send)
        finally:
            self.body = b""
            await self.charge.release()

    async def _send_in_chunks(self, scope, send) -> None:  # type: ignore[no-untyped-def]
        body = memoryview(self.body)
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                for begin in range(0, max(len(body), 1), self.chunk_bytes):
                    chunk = bytes(body[begin : begin + self.chunk_bytes])
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": begin + self.chunk_bytes < len(body)})
        except TimeoutError:
            log.debug("client %s did not read its reply within %.0f s; dropped", scope.get("client"),
                      self.send_timeout_s)
            if self.on_timeout is not None:
                self.on_timeout()
            abort = (scope.get("extensions") or {}).get(ABORT_EXTENSION)
            if abort is not None:
                abort()  # a close() would keep the unsent reply buffered until the client reads it


class _GuardedApp:
    """The last line: whatever escapes a handler is answered with a 500 and one log line, and a client
    that went away is not an error."""

    def __init__(self, app, server: BrainServer):
        self.app = app
        self.server = server

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        started = False

        async def tracking_send(message) -> None:  # type: ignore[no-untyped-def]
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except OSError as error:  # the client's socket went away under us
            log.debug("client %s gone: %s", scope.get("client"), error)
        except Exception as error:  # noqa: BLE001
            log.error("request %s %s failed: %s: %s", scope.get("method"), scope.get("path"),
                      type(error).__name__, error)
            self.server._refuse("server_error")
            if not started:
                body = json.dumps({"error": f"{type(error).__name__}: {error}"}).encode()
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})


def serve(model: BrainModel, **kwargs: Any) -> BrainServer:
    """Start a server in a background thread and return it (``close()`` to stop)."""
    return BrainServer(model, **kwargs).start()
