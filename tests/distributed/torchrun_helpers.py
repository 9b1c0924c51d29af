"""Builders for the two-process CPU runs: free ports, a served brain model, a tiny policy on disk, and an
OpenAI-compatible chat server standing in for the campaign's LLM (the network API cannot be reached here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

from tests.helpers import FakeChatServer

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("river council storm market vaccine bridge orchestra rally festival satellite harbor clinic league "
         "budget wildfire museum transit laboratory drought startup").split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The parent's environment, offline, one thread per process (two ranks share two cores)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", KERAS_BACKEND="torch", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def torchrun(module_args: list[str], cwd: Path, timeout_s: float, env: dict[str, str] | None = None):
    """``torchrun --standalone --nproc_per_node 2 -m <module_args>``; returns (CompletedProcess, seconds).

    ``--standalone`` lets the rendezvous pick its own free port on 127.0.0.1."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               *module_args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True,
                          timeout=timeout_s)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-6000:]}")
    return done, seconds


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class BrainServe:
    """``brainrl serve --model synthetic`` in a subprocess on a free loopback port (context manager)."""

    def __init__(self, tmp: Path, start_timeout_s: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tmp) / "serve.log"
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "BrainServe":
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "brainrl", "serve", "--model", "synthetic", "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=self._log, stderr=subprocess.STDOUT, env=subprocess_env())
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"brainrl serve exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                get_json(self.url + "/health", timeout=2.0)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise TimeoutError(f"brainrl serve did not answer /health in {self.start_timeout_s} s")
                time.sleep(0.5)

    def health(self) -> dict:
        return get_json(self.url + "/health")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._log.close()


def save_tiny_policy(folder: Path) -> Path:
    """The tiny random-weight chat model and its tokenizer, saved so every rank loads the same one."""
    from brainrl.policy.tiny import tiny_policy

    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def headline_block(seed: int) -> str:
    """Five numbered 12-word headlines, a function of the request's seed (unique per seed)."""
    rng = np.random.default_rng(seed)
    return "\n".join(f"{k}. " + " ".join(rng.choice(WORDS, 10)).capitalize() + f" number {seed}-{k}"
                     for k in range(1, 6))


class SeededChatServer(FakeChatServer):
    """The loopback OpenAI-style chat server answering with ``headline_block(body['seed'])``; ``seeds``
    lists the seed of every request."""

    def __init__(self):
        super().__init__(lambda body: headline_block(body["seed"]))

    @property
    def seeds(self) -> list[int]:
        return [int(body["seed"]) for body in self.requests]


