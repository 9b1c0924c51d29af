"""Test doubles for what cannot run inside a fast test: an LLM (hub weights / slow CPU generation) and
an OpenAI-compatible server (network). They follow the real interfaces: ``generate(conversations,
seeds) -> list[str | Failed]`` and ``POST /chat/completions`` with the OpenAI JSON shapes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import numpy as np

from brainrl.sbi.prior import PARAM_NAMES

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


class FakeChatServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (stdlib http.server in a thread).

    ``script`` is a list of responses served in order (then the last one repeats): each is a string
    (the assistant content), an int (an HTTP error status) or ``("sleep", seconds, content)``.
    """

    def __init__(self, script: list[Any]):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                step = server.script[min(len(server.requests) - 1, len(server.script) - 1)]
                if isinstance(step, tuple) and step[0] == "sleep":
                    import time

                    time.sleep(step[1])
                    step = step[2]
                if isinstance(step, int):
                    self.send_response(step)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                payload = {"id": "x", "object": "chat.completion", "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": step}}]}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
