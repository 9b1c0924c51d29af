"""Small in-test implementations of the speech and brain interfaces, for pipeline mechanics.

They are not stand-ins for unavailable services: they let tests inject failures and count calls. The
real espeak engine and synthetic model are tested with the same pipeline elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np

from brainrl.brain.base import N_VERTICES, BrainMap, BrainModel, Failed
from brainrl.stimulus.base import SpeechEngine, Stimulus, Word


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as a module (scripts/ on the path for the modules it imports beside it)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CountingSpeech(SpeechEngine):
    """One word per 0.4 s, silent audio; fails on texts containing 'FAILSPEECH'."""

    name = "counting"

    @property
    def version(self) -> str:
        return "counting-1"

    def _synthesize_one(self, text: str) -> Stimulus:
        if "FAILSPEECH" in text:
            raise RuntimeError("speech engine refused this text")
        words, pos = [], 0
        for i, token in enumerate(text.split(" ")):
            start = text.index(token, pos)
            pos = start + len(token)
            words.append(Word(token, 0.4 * i, 0.4, start, pos))
        duration = 0.4 * len(words)
        return Stimulus(text, words, None, 16000, duration, self.name, self.version,
                        waveform=np.zeros(int(16000 * duration), np.float32))


class LengthBrain(BrainModel):
    """Activity proportional to the number of words, higher in the first 500 vertices; counts calls."""

    name = "length"

    def __init__(self, fail_words: str | None = None):
        self.calls: list[int] = []
        self.fail_words = fail_words

    def identity(self):
        return {"model": "length", "version": 1}

    def predict(self, stimuli):
        self.calls.append(len(stimuli))
        out = []
        for s in stimuli:
            if self.fail_words and self.fail_words in s.text:
                out.append(Failed("model refused"))
                continue
            frames = max(1, int(np.ceil(s.duration)))
            data = np.full((frames, N_VERTICES), 0.01 * len(s.words), np.float32)
            data[:, :500] += 0.1 * len(s.words)
            out.append(BrainMap(data, {"model": "length"}))
        return out


class FakeChatServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (stdlib http.server in a thread).

    ``script`` is a list of responses served in order (then the last one repeats), or a callable
    ``script(request_body) -> response``: each response is a string (the assistant content), an int (an
    HTTP error status) or ``("sleep", seconds, content)``. ``requests`` records every request body.
    """

    def __init__(self, script: "list[Any] | Callable[[dict], Any]"):
        self.script = script if callable(script) else list(script)
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
                if callable(server.script):
                    step = server.script(body)
                else:
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
