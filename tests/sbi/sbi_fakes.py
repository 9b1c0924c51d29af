"""Test doubles for what cannot run inside a fast test: an LLM (hub weights / slow CPU generation) and
an OpenAI-compatible server (network). They follow the real interfaces: ``generate(conversations,
seeds) -> list[str | Failed]`` and ``POST /chat/completions`` with the OpenAI JSON shapes."""

from __future__ import annotations

from typing import Callable

import numpy as np

from brainrl.sbi.simulation.prior import PARAM_NAMES
from tests.helpers import FakeChatServer  # noqa: F401  (re-exported: tests/sbi import it from here)

WORDS = ("river council storm market vaccine bridge orchestra rally festival satellite harbor clinic league "
         "budget wildfire museum transit laboratory drought startup").split()


def seeded_headline(seed: int, n_words: int = 12) -> str:
    rng = np.random.default_rng(seed % 2**63)
    return " ".join(rng.choice(WORDS, n_words)).capitalize() + f" {seed % 100000}"


class ScriptedGenerator:
    """Replies are a function of (conversation, seed); counts calls; can be told to break on a call."""

    def __init__(self, reply: Callable[[list[dict[str, str]], int], str] | None = None, fail_on_call: int | None = None):
        self.reply = reply or self.good_block
        self.calls = 0
        self.conversations: list[list[dict[str, str]]] = []
        self.fail_on_call = fail_on_call

    @staticmethod
    def good_block(messages, seed: int) -> str:
        return "\n".join(f"{k}. {seeded_headline(seed * 10 + k)}" for k in range(1, 6))

    def generate(self, conversations, seeds):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash in the middle of a campaign")
        self.conversations += list(conversations)
        return [self.reply(c, s) for c, s in zip(conversations, seeds)]

    def identity(self):
        return {"backend": "scripted", "model": "test-double"}


def scores_reply(values) -> str:
    return "\n".join(f"{n}: {v:.3f}" for n, v in zip(PARAM_NAMES, values))


