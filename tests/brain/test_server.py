"""brainrl serve against careless or hostile clients (loopback, fast): every limit and error has a test.

The model behind the server is ``HashBrain`` (tests/brain/test_remote.py), whose maps have one frame per
started second of the stimulus's ``duration``, so a server that trusted a client's duration would show it.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import socket
import threading
import time

import numpy as np
import pytest

from brainrl.brain import BrainMap, Failed
from brainrl.brain.remote import RemoteBrainModel
from brainrl.brain.server import BrainServer
from brainrl.brain.wire import ServeLimits, decode_array, stimulus_to_wire
from tests.brain.test_remote import HashBrain, stimulus




def post(server: BrainServer, body, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection(*server.address, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        conn.close()


def raw_exchange(server: BrainServer, request: bytes, timeout: float = 5) -> tuple[int, str]:
    """Send raw bytes, return the status and body of the reply (the server may not read all we send)."""
    with socket.create_connection(server.address, timeout=timeout) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode()


def wire(*texts: str) -> list[dict]:
    return [stimulus_to_wire(stimulus(t)) for t in texts]


def test_duration_is_computed_from_the_audio_not_taken_from_the_client(served):
    server = served()
    honest = stimulus("three short words")
    item = stimulus_to_wire(honest)
    item["duration"] = 3000.0  # a lie: on main this made a 3,000-frame map
    status, reply = post(server, {"stimuli": [item]})
    assert status == 200
    [answer] = reply["items"]
    data = decode_array(answer["data_npy_b64"])
    real_seconds = len(honest.waveform) / honest.sample_rate
    assert data.shape[0] == math.ceil(real_seconds) < 10


def test_words_outside_the_audio_and_bad_sample_rates_fail_only_their_item(served):
    server = served()
    good, zero_rate, late_word, huge_rate, not_audio = wire("good one", "zero rate", "late word", "huge rate", "x")
    zero_rate["sample_rate"] = 0  # on main this turned the whole request into a 500
    late_word["words"][0][1] = 500.0
    huge_rate["sample_rate"] = 10**9
    not_audio["waveform_npy_b64"] = "not base64 !!"
    status, reply = post(server, {"stimuli": [good, zero_rate, late_word, huge_rate, not_audio]})
    assert status == 200
    items = reply["items"]
    assert "data_npy_b64" in items[0]
    assert "sample_rate" in items[1]["error"] and "sample_rate" in items[3]["error"]
    assert "lies outside" in items[2]["error"]
    assert "base64" in items[4]["error"]


def test_per_request_caps_answer_413_naming_the_cap(served):
    # stimulus(): 0.3 s per word + 0.1 s; characters count the text and its words' texts
    server = served(limits=ServeLimits(max_items=3))
    status, reply = post(server, {"stimuli": wire("a", "b", "c", "d")})
    assert status == 413 and "max_items=3" in reply["error"]
    server = served(limits=ServeLimits(max_chars_per_request=60))
    status, reply = post(server, {"stimuli": wire("x" * 25, "y" * 25)})  # 100 characters
    assert status == 413 and "max_chars_per_request=60" in reply["error"]
    server = served(limits=ServeLimits(max_seconds_per_request=3.0))
    status, reply = post(server, {"stimuli": wire("a b c d e", "f g h i j", "k l m")})  # 1.6 + 1.6 + 1.0 s
    assert status == 413 and "max_seconds_per_request=3" in reply["error"]


def test_per_item_caps_fail_only_that_item(served):
    server = served(limits=ServeLimits(max_seconds_per_item=2.4, max_chars_per_item=30, max_words_per_item=8))
    status, reply = post(server, {"stimuli": wire("a b c d e f g h", "w" * 20, "1 2 3 4 5 6 7 8 9", "ok")})
    assert status == 200
    first, second, third, fourth = reply["items"]
    assert "max_seconds_per_item=2.4" in first["error"]  # 2.5 s of audio
    assert "max_chars_per_item=30" in second["error"]
    assert "max_words_per_item=8" in third["error"]
    assert "data_npy_b64" in fourth


def test_body_limits_are_checked_before_the_body_is_read(served):
    server = served(limits=ServeLimits(max_body_bytes=10_000))
    # declares 1 GB and sends none of it: refused at once from the headers
    status, text = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
    assert status == 413 and "max_body_bytes=10000" in text
    status, text = raw_exchange(server, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status == 411 and "Content-Length" in text
    status, reply = post(server, b"{not json")
    assert status == 400 and "not JSON" in reply["error"]
    status, reply = post(server, {"stimuli": "nope"})
    assert status == 400 and "'stimuli'" in reply["error"]


def test_idle_and_half_sent_connections_are_closed_by_the_deadlines(served):
    server = served(header_timeout_s=0.5, body_timeout_s=0.5)
    started = time.monotonic()
    with socket.create_connection(server.address, timeout=10) as idle, \
            socket.create_connection(server.address, timeout=10) as half_head:
        half_head.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        assert idle.recv(1) == b"" and half_head.recv(1) == b""  # closed by the server
    assert time.monotonic() - started < 5  # on main both were held (30 s and more)
    with socket.create_connection(server.address, timeout=10) as half_body:
        half_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"stimuli\": [")
        reply = half_body.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408") or reply == b""
    assert time.monotonic() - started < 8
    assert server.refused.get("body_timeout") == 1
    # the server still answers, and the token-free health check is unaffected
    [ok] = RemoteBrainModel(server.url, timeout=5, retries=0).predict([stimulus("still serving")])
    assert isinstance(ok, BrainMap)


def test_a_client_that_does_not_read_its_reply_is_dropped(served):
    server = served(send_timeout_s=1.0)
    body = json.dumps({"stimuli": wire(*[" ".join(["word"] * 100)] * 8)}).encode()  # 8 x 31 frames: ~27 MB reply
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(4)  # the model answers at once; the reply waits on us, then the server gives up
        received, reset = 0, False
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            reset = True
    assert reset and received < 8 * 31 * 20484 * 4  # dropped with most of the reply unsent
    assert server.budget.used == 0 and server.refused["send_timeout"] == 1
    [ok] = RemoteBrainModel(server.url, timeout=5, retries=0).predict([stimulus("next client")])
    assert isinstance(ok, BrainMap)


def test_a_full_memory_budget_answers_503_and_frees_when_the_holder_goes(served):
    server = served(max_inflight_bytes=1000, queue_timeout_s=0.5, body_timeout_s=10)
    with socket.create_connection(server.address, timeout=10) as holder:
        holder.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b" " * 200)
        time.sleep(0.3)  # 200 bytes charged x10: the whole budget
        status, reply = post(server, {"stimuli": wire("waits for memory")})
        assert status == 503 and "busy" in reply["error"]
    time.sleep(0.3)  # the holder went away: its charge is released
    assert server.budget.used == 0
    [ok] = RemoteBrainModel(server.url, timeout=5, retries=0).predict([stimulus("now there is room")])
    assert isinstance(ok, BrainMap)


def test_many_simultaneous_plain_clients_are_all_accepted(served):
    """Backlog and concurrency: 64 clients without retries connect at the same instant."""
    server = served()
    barrier = threading.Barrier(64)
    failures: list[str] = []

    def one() -> None:
        barrier.wait()
        try:
            conn = http.client.HTTPConnection(*server.address, timeout=30)
            conn.request("GET", "/health")
            if conn.getresponse().status != 200:
                failures.append("status")
            conn.close()
        except OSError as error:
            failures.append(repr(error))

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]


def test_aborted_clients_log_no_traceback(served, caplog):
    server = served(HashBrain(delay_s=0.3))
    body = json.dumps({"stimuli": wire("going away")}).encode()
    with caplog.at_level(logging.DEBUG):
        for cut in (len(body) // 2, len(body)):  # mid-body, and while the model works
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:cut])
                time.sleep(0.05)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        time.sleep(0.8)
        [ok] = RemoteBrainModel(server.url, timeout=5, retries=0).predict([stimulus("after the aborts")])
    assert isinstance(ok, BrainMap)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_client_splits_requests_to_fit_the_advertised_limits(served):
    model = HashBrain()
    server = served(model, limits=ServeLimits(max_items=2, max_seconds_per_request=2.0))
    client = RemoteBrainModel(server.url, timeout=10, retries=0)
    texts = ["one two three", "four", "five six", "seven", "eight nine ten"]  # 1.0, 0.4, 0.7, 0.4, 1.0 s
    got = client.predict([stimulus(t) for t in texts])
    assert all(isinstance(g, BrainMap) for g in got)
    health = client.health()
    assert health["limits"]["max_items"] == 2
    assert max(model.batch_sizes) <= 2 and sum(model.batch_sizes) == len(texts)
    assert not health["refused"]


def test_a_model_error_fails_the_items_not_the_server(served):
    class Broken(HashBrain):
        def predict(self, stimuli):
            raise RuntimeError("GPU fell off")

    server = served(Broken())
    [failed] = RemoteBrainModel(server.url, timeout=5, retries=0).predict([stimulus("anything")])
    assert isinstance(failed, Failed) and "GPU fell off" in failed.reason


def test_a_server_that_is_down_at_the_first_reward_call_gives_failed_items_not_a_crash(tmp_path):
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from tests.helpers import CountingSpeech

    client = RemoteBrainModel("http://127.0.0.1:9", timeout=1, retries=1, backoff_s=0.01)  # nothing listens
    pipeline = BrainPipeline(PipelineConfig(cache_dir=""), speech=CountingSpeech(), model=client)
    results = pipeline.predict_texts(["first reward call", "second text"])  # on main: RemoteError raised
    assert all(isinstance(r, Failed) and "cannot reach" in r.reason for r in results)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_items"):
        ServeLimits(max_items=0)
    with pytest.raises(ValueError, match="min_sample_rate"):
        ServeLimits(min_sample_rate=50_000)
    with pytest.raises(ValueError, match="max_inflight_bytes"):
        BrainServer(HashBrain(), port=0, max_inflight_bytes=-1)
