"""Shared fixtures of the brain tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def served():
    """``start(model=None, **BrainServer kwargs)`` -> a started server on a free loopback port (closed after
    the test); the model defaults to ``HashBrain`` (tests/brain/test_remote.py)."""
    from brainrl.brain.server import BrainServer
    from tests.brain.test_remote import HashBrain

    servers = []

    def start(model=None, **kwargs):
        kwargs.setdefault("port", 0)
        server = BrainServer(model if model is not None else HashBrain(), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
