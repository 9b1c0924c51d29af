"""The server's per-client counters (GET /health "clients"), which the torchrun tests read to see both ranks."""

from __future__ import annotations

import numpy as np

from brainrl.brain import N_VERTICES, BrainMap, BrainModel
from brainrl.brain.remote import RemoteBrainModel, client_id
from brainrl.brain.server import BrainServer
from brainrl.stimulus import Stimulus, Word


class ConstantBrain(BrainModel):
    name = "constant"

    def identity(self):
        return {"model": "constant"}

    def predict(self, stimuli):
        return [BrainMap(np.ones((2, N_VERTICES), dtype=np.float32)) for _ in stimuli]


def stimulus(text: str) -> Stimulus:
    waveform = np.zeros(800, dtype=np.float32)
    return Stimulus(text, [Word(text, 0.0, 0.1)], None, 8000, 0.1, "test-speech", "1", waveform=waveform)


def test_health_counts_requests_and_items_per_rank(monkeypatch):
    server = BrainServer(ConstantBrain(), port=0).start()
    try:
        client = RemoteBrainModel(server.url, timeout=10, retries=0)
        monkeypatch.setenv("RANK", "0")
        assert all(isinstance(p, BrainMap) for p in client.predict([stimulus("a"), stimulus("b")]))
        rank0 = client_id()
        monkeypatch.setenv("RANK", "1")
        client.predict([stimulus("c")])
        client.predict([stimulus("d")])
        rank1 = client_id()
        clients = client.health()["clients"]
    finally:
        server.close()
    assert rank0.endswith("/rank0") and rank1.endswith("/rank1")
    assert clients == {rank0: {"requests": 1, "items": 2}, rank1: {"requests": 2, "items": 2}}
