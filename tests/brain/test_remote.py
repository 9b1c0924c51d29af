"""brainrl serve + RemoteBrainModel: concurrency, auth, retries, timeouts, failures (never zeros)."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from brainrl.brain import BRAIN_MODELS, N_VERTICES, BrainMap, BrainModel, Failed
from brainrl.brain.remote import RemoteBrainModel, RemoteError
from brainrl.brain.server import BrainServer
from brainrl.stimulus import Stimulus, Word
from brainrl.brain.base import MAP_ATOL, MAP_RTOL


def stimulus(text: str) -> Stimulus:
    words = [Word(t, 0.3 * i, 0.25) for i, t in enumerate(text.split())]
    duration = 0.3 * len(words) + 0.1
    waveform = np.sin(np.arange(int(8000 * duration)) * (0.01 + len(text) / 1e4)).astype(np.float32)
    return Stimulus(text, words, None, 8000, duration, "test-speech", "1", waveform=waveform)


class HashBrain(BrainModel):
    """Maps fully determined by the text and the audio it receives; records batch sizes; can be slow."""

    name = "hash"

    def __init__(self, delay_s: float = 0.0, fail_word: str | None = None):
        self.batch_sizes: list[int] = []
        self.delay_s = delay_s
        self.fail_word = fail_word
        self.threads: set[int] = set()

    def identity(self):
        return {"model": "hash", "version": 3}

    def predict(self, stimuli):
        self.batch_sizes.append(len(stimuli))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        out = []
        for s in stimuli:
            if self.fail_word and self.fail_word in s.text:
                out.append(Failed("hash brain refuses this word"))
                continue
            seed = int(hashlib.sha256(s.text.encode()).hexdigest()[:8], 16)
            frames = max(1, int(np.ceil(s.duration)))
            data = np.random.default_rng(seed).standard_normal((frames, N_VERTICES)).astype(np.float32)
            data[:, 0] = float(np.abs(s.load_waveform()).sum())  # the audio made the trip intact
            out.append(BrainMap(data, {"text_sha": seed}))
        return out




def test_registered_as_remote():
    assert BRAIN_MODELS.factory("remote") is RemoteBrainModel


def test_round_trip_identity_and_per_item_failures(served):
    model = HashBrain(fail_word="forbidden")
    server = served(model)
    client = RemoteBrainModel(server.url, timeout=10, retries=0)
    assert client.identity() == model.identity()
    health = client.health()
    assert health["status"] == "ok" and health["model"] == "hash" and health["uptime_s"] >= 0
    assert "numpy" in health["versions"]
    stimuli = [stimulus("alpha beta gamma"), stimulus("a forbidden text"), stimulus("delta")]
    got = client.predict(stimuli)
    direct = HashBrain(fail_word="forbidden").predict(stimuli)
    assert isinstance(got[1], Failed) and "refuses" in got[1].reason
    for g, d in ((got[0], direct[0]), (got[2], direct[2])):
        np.testing.assert_allclose(g.data, d.data, rtol=MAP_RTOL, atol=MAP_ATOL)


def test_concurrent_clients_nothing_lost_duplicated_or_mixed(served):
    """8 client threads x 10 requests of 1-3 distinct texts against one server."""
    model = HashBrain(delay_s=0.005)
    server = served(model, max_batch=32, batch_window_s=0.02)
    reference = HashBrain()
    errors: list[str] = []
    checked = []
    barrier = threading.Barrier(8)

    def client_thread(client_id: int) -> None:
        client = RemoteBrainModel(server.url, timeout=30, retries=1)
        barrier.wait()
        for request in range(10):
            texts = [f"client {client_id} request {request} item {k} words" for k in range(1 + (request % 3))]
            stimuli = [stimulus(t) for t in texts]
            got = client.predict(stimuli)
            expected = reference.predict(stimuli)
            if len(got) != len(stimuli):
                errors.append(f"{client_id}/{request}: {len(got)} results for {len(stimuli)}")
                continue
            for text, g, e in zip(texts, got, expected):
                if not isinstance(g, BrainMap) or not np.allclose(g.data, e.data, rtol=MAP_RTOL, atol=MAP_ATOL):
                    errors.append(f"{text}: wrong or failed map")
                else:
                    checked.append(text)

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:5]
    n_items = sum(1 + (r % 3) for r in range(10)) * 8
    assert len(checked) == len(set(checked)) == n_items  # nothing lost, nothing duplicated
    assert sum(model.batch_sizes) == n_items  # each item predicted exactly once
    assert len(model.threads) == 1  # the model is only ever called from the batcher thread
    assert max(model.batch_sizes) > 3  # concurrent requests were coalesced into shared predict calls


def test_non_loopback_bind_requires_token(served, monkeypatch):
    monkeypatch.delenv("BRAINRL_SERVE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="without a token"):
        BrainServer(HashBrain(), host="0.0.0.0", port=0)
    server = served(HashBrain(), host="0.0.0.0", token="s3cret")
    url = f"http://127.0.0.1:{server.address[1]}"
    anonymous = RemoteBrainModel(url, timeout=5, retries=2, backoff_s=0.01)
    with pytest.raises(RemoteError, match="HTTP 401"):
        anonymous.identity()
    [failed] = anonymous.predict([stimulus("no token")])
    assert isinstance(failed, Failed) and "401" in failed.reason
    [ok] = RemoteBrainModel(url, token="s3cret", timeout=5).predict([stimulus("with token")])
    assert isinstance(ok, BrainMap)
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(urllib.request.Request(url + "/health", headers={"Authorization": "Bearer nope"}), timeout=5)
    assert wrong.value.code == 401


def test_retries_transient_errors_with_backoff_then_succeeds(served, monkeypatch):
    server = served(HashBrain())
    client = RemoteBrainModel(server.url, timeout=5, retries=3, backoff_s=0.01)
    real_urlopen = urllib.request.urlopen
    attempts = []

    def flaky(request, timeout=None):
        attempts.append(request.full_url)
        if len(attempts) <= 2:
            raise urllib.error.URLError(ConnectionRefusedError("connection refused"))
        return real_urlopen(request, timeout=timeout)

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    [ok] = client.predict([stimulus("eventually served")])
    assert isinstance(ok, BrainMap) and len(attempts) == 3


def test_gives_up_after_bounded_retries_and_never_returns_zeros():
    client = RemoteBrainModel("http://127.0.0.1:9", timeout=1, retries=2, backoff_s=0.01)  # nothing listens
    started = time.monotonic()
    results = client.predict([stimulus("one"), stimulus("two")])
    assert all(isinstance(r, Failed) and "cannot reach" in r.reason for r in results)
    assert time.monotonic() - started < 10


def test_bad_requests_are_not_retried(served, monkeypatch):
    server = served(HashBrain())
    client = RemoteBrainModel(server.url, timeout=5, retries=3, backoff_s=0.01)
    calls = []
    original = client._request
    monkeypatch.setattr(client, "_request", lambda *a, **k: calls.append(a) or original(*a, **k))
    with pytest.raises(RemoteError, match="HTTP 400"):
        client._with_retries("POST", "/predict", {"texts": ["no speech engine on this server"]})
    assert len(calls) == 1


def test_client_timeout_becomes_failed(served):
    server = served(HashBrain(delay_s=2.0))
    client = RemoteBrainModel(server.url, timeout=0.5, retries=0)
    started = time.monotonic()
    [failed] = client.predict([stimulus("too slow")])
    assert isinstance(failed, Failed) and "timed out" in failed.reason
    assert time.monotonic() - started < 2.0


def test_texts_endpoint_uses_server_speech(served):
    from tests.helpers import CountingSpeech

    server = served(HashBrain(), speech=CountingSpeech())
    client = RemoteBrainModel(server.url, timeout=5)
    reply = client._with_retries("POST", "/predict", {"texts": ["spoken on the server", "   "]})
    assert "data_npy_b64" in reply["items"][0] and "error" in reply["items"][1]
    assert reply["identity"]["speech"]["speech_engine"] == "counting"


@pytest.mark.slow
def test_brainrl_serve_cli_serves_the_synthetic_model(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "brainrl", "serve", "--model", "synthetic", "--host", "127.0.0.1",
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("brainrl serve: synthetic at http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ")[1].strip()
        health = json.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
        assert health["model"] == "synthetic" and health["identity"]["model"] == "synthetic"
        assert RemoteBrainModel(url).identity() == health["identity"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    refused = subprocess.run([sys.executable, "-m", "brainrl", "serve", "--host", "0.0.0.0", "--port", "0"],
                             capture_output=True, text=True, env={k: v for k, v in env.items() if k != "BRAINRL_SERVE_TOKEN"},
                             timeout=60)
    assert refused.returncode == 2 and "without a token" in refused.stderr
