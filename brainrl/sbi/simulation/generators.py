"""Chat generators behind a small registry: a local transformers model and any OpenAI-compatible
endpoint. Both take a batch of conversations and return one reply (or ``Failed``) per conversation.

The generator is part of the simulator (the paper's results differ by generator), so ``identity()``
is stored with every simulated item.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from brainrl.brain.base import Failed
from brainrl.registry import Registry
from brainrl.sbi.simulation.prompts import Messages

log = logging.getLogger(__name__)

Reply = str | Failed


class ChatGenerator(Protocol):
    """What the simulator and the cycle evaluator need from an LLM."""

    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[Reply]:
        """One reply per conversation, in order; a per-item failure is ``Failed(reason)``."""

    def identity(self) -> dict[str, Any]:
        """Everything that changes outputs (backend, model, sampling settings), JSON-able."""


GENERATORS: Registry[ChatGenerator] = Registry("generator")


@dataclass
class GeneratorConfig:
    """Which generator (registry name) with which settings; what recipes hold."""

    name: str = "local"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ChatGenerator:
        return GENERATORS.create(self.name, **self.kwargs)


# -- local ------------------------------------------------------------------------------------------
def _load_local(model: str, device: str, dtype: str):
    """(model, tokenizer) from the embedded default name, a hub id, a folder, or a .gguf file,
    through the policy loader (one place that knows how to load and cache each kind)."""
    from brainrl.policy import load_policy

    loaded, tokenizer = load_policy(model, dtype=dtype, device=device)
    return loaded.eval(), tokenizer


#: how the local generator draws tokens (recorded in its identity; campaigns made before it seeded torch's
#: global generator once per forward batch from the batch's first request)
SAMPLING_SCHEME = "per-request generators (temperature, top-p)"


class PerRequestSampler:
    """A transformers logits processor that samples each row's next token with that row's own
    ``torch.Generator`` (seeded by the request's seed) after temperature and nucleus (top-p) filtering,
    and returns scores that keep only the drawn token, so greedy decoding emits it.

    Row r's t-th token uses the t-th draw of generator r and row r's logits only: the replies do not
    depend on batch size or order (up to float round-off in the logits of a differently padded batch)."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float = 1.0):
        import torch

        if temperature <= 0:
            raise ValueError(f"PerRequestSampler needs temperature > 0, got {temperature}; use greedy decoding.")
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.generators = [torch.Generator().manual_seed(int(s) % 2**63) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows of scores for {len(self.generators)} seeded requests.")
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            outside = ordered.cumsum(dim=-1) - ordered >= self.top_p  # the top token always stays
            probs = torch.zeros_like(probs).scatter(-1, order, ordered.masked_fill(outside, 0.0))
        chosen = torch.stack([torch.multinomial(p.cpu(), 1, generator=g) for p, g in zip(probs, self.generators)])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, chosen.to(scores.device), 0.0)


class LocalChatGenerator:
    """A causal LM run here with transformers: chat template, left padding, batched sampling.

    ``model`` is ``"smollm2"`` (the embedded default, via ``brainrl.policy``), a hub id, a folder
    made by ``save_pretrained`` or a ``.gguf`` file. Sampling is seeded per request (``PerRequestSampler``):
    a reply is a function of its conversation and its own seed, whatever else shares its forward batch, so
    a campaign resumed with another batch size writes the same texts.
    """

    name = "local"

    def __init__(self, model: str = "smollm2", max_new_tokens: int = 200, temperature: float = 0.8,
                 top_p: float = 0.95, batch_size: int = 8, device: str = "cpu", dtype: str = "auto",
                 stop_strings: list[str] | None = None, model_object: Any = None, tokenizer: Any = None,
                 prefix_cache: bool = False):
        self.model_spec = str(model)
        #: reuse the keys/values of the messages every prompt of a batch shares (system prompt, few-shot
        #: turns): on a CPU the prefill of a long shared prefix costs more than the decoding
        self.prefix_cache = bool(prefix_cache)
        self._prefix_kv: dict[str, Any] = {}
        self.max_new_tokens, self.temperature, self.top_p = int(max_new_tokens), float(temperature), float(top_p)
        self.batch_size, self.device, self.dtype = int(batch_size), device, dtype
        self.stop_strings = list(stop_strings) if stop_strings else None
        self._model, self._tokenizer = model_object, tokenizer

    def _ensure_loaded(self) -> None:
        if self._model is None:
            self._model, self._tokenizer = _load_local(self.model_spec, self.device, self.dtype)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._tokenizer.padding_side = "left"
            if getattr(self._tokenizer, "chat_template", None) is None:
                raise ValueError(f"model {self.model_spec!r} has no chat template; use an instruct model.")

    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[Reply]:
        import torch

        self._ensure_loaded()
        replies: list[Reply] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = list(conversations[start:start + self.batch_size])
            prompts = [self._tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chunk]
            shared = self._shared_prefix_inputs(prompts) if self.prefix_cache else None
            inputs = shared or self._tokenizer(prompts, return_tensors="pt", padding=True,
                                               add_special_tokens=False).to(self.device)
            sampling: dict[str, Any] = {}
            if self.temperature > 0:
                from transformers import LogitsProcessorList

                sampling["logits_processor"] = LogitsProcessorList([PerRequestSampler(
                    seeds[start:start + len(chunk)], self.temperature, self.top_p)])
            with torch.no_grad():
                # greedy over the sampler's one-hot scores = a draw from each request's own generator
                out = self._model.generate(
                    **inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                    max_new_tokens=self.max_new_tokens, pad_token_id=self._tokenizer.pad_token_id, **sampling,
                    **({"stop_strings": self.stop_strings, "tokenizer": self._tokenizer} if self.stop_strings else {}),
                )
            new_tokens = out[:, inputs["input_ids"].shape[1]:]
            replies.extend(self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        return replies

    def _shared_prefix_inputs(self, prompts: list[str]) -> dict[str, Any] | None:
        """Generate inputs that start from the cached keys/values of the prompts' common prefix.

        The prefix is cut at the last message boundary all prompts share, so its tokens are exactly
        those of the full prompts; padding goes between prefix and suffix, where the attention mask
        hides it and position ids (a cumulative sum of the mask) stay those of the unpadded prompt.
        ``None`` (plain left-padded batch) when there is no shared message or the tokens do not line up.
        """
        import copy
        import os.path

        import torch

        tok = self._tokenizer
        common = os.path.commonprefix(prompts)
        marker = "<|im_start|>" if "<|im_start|>" in common else None
        cut = common.rfind(marker) if marker else -1
        if cut <= 0:
            return None
        prefix = common[:cut]
        prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        suffixes = [tok(p[cut:], add_special_tokens=False)["input_ids"] for p in prompts]
        if any(tok(p, add_special_tokens=False)["input_ids"] != prefix_ids + s for p, s in zip(prompts, suffixes)):
            return None
        if prefix not in self._prefix_kv:
            self._prefix_kv.clear()  # one prefix at a time: a campaign uses one prompt style
            with torch.no_grad():
                output = self._model(torch.tensor([prefix_ids], device=self.device), use_cache=True)
            # transformers >= 5 names the cache ``cache`` (``past_key_values`` warns); 4.x only has the old name
            key = "cache" if "cache" in output else "past_key_values"
            self._prefix_kv[prefix] = (key, output[key])
        key, cached = self._prefix_kv[prefix]
        cache = copy.deepcopy(cached)
        cache.batch_repeat_interleave(len(prompts))
        n_prefix, width = len(prefix_ids), max(map(len, suffixes))
        ids = torch.full((len(prompts), n_prefix + width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        ids[:, :n_prefix], mask[:, :n_prefix] = torch.tensor(prefix_ids), 1
        for row, suffix in enumerate(suffixes):
            ids[row, n_prefix + width - len(suffix):] = torch.tensor(suffix)
            mask[row, n_prefix + width - len(suffix):] = 1
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), key: cache}

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_spec, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "batch_size": self.batch_size,
                "stop_strings": self.stop_strings, "sampling": SAMPLING_SCHEME,
                **({"prefix_cache": True} if self.prefix_cache else {}),
                **({"dtype": self.dtype} if self.dtype != "auto" else {})}  # bf16 writes other texts than fp32


# -- OpenAI-compatible ------------------------------------------------------------------------------
class OpenAIChatGenerator:
    """Any server speaking ``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp, Ollama…).

    The base URL and key come from environment variables (names configurable) so recipes hold no
    secrets. Transport errors, timeouts, 429 and 5xx are retried with backoff, ``max_retries`` times;
    other HTTP errors and malformed replies fail that item with the reason.
    """

    name = "openai"

    def __init__(self, model: str, base_url_env: str = "OPENAI_BASE_URL", api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.8, max_tokens: int = 300, timeout_s: float = 60.0, max_retries: int = 3,
                 backoff_s: float = 1.0, concurrency: int = 4, send_seed: bool = True, stop: list[str] | None = None):
        base = os.environ.get(base_url_env, "").strip()
        if not base:
            raise ValueError(f"the openai generator needs a base URL: set ${base_url_env} "
                             "(e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1).")
        self.base_url, self.api_key = base.rstrip("/"), os.environ.get(api_key_env, "")
        self.model, self.temperature, self.max_tokens = model, float(temperature), int(max_tokens)
        self.timeout_s, self.max_retries, self.backoff_s = float(timeout_s), int(max_retries), float(backoff_s)
        self.concurrency, self.send_seed = max(1, int(concurrency)), bool(send_seed)
        self.stop = list(stop) if stop else None

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def _one(self, messages: Messages, seed: int) -> Reply:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                "max_tokens": self.max_tokens}
        if self.stop:
            body["stop"] = self.stop
        if self.send_seed:
            body["seed"] = int(seed) % 2**31
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            try:
                payload = self._post(body)
                content = payload["choices"][0]["message"]["content"]
                if not isinstance(content, str):
                    return Failed(f"endpoint reply has no text content: {str(payload)[:200]}")
                return content
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}: {err.read()[:200]!r}"
                if err.code != 429 and err.code < 500:
                    return Failed(f"chat endpoint refused the request ({last})")
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                last = f"{type(err).__name__}: {err}"
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
                return Failed(f"malformed chat completion reply: {type(err).__name__}: {err}")
            if attempt < self.max_retries:
                log.warning("chat endpoint attempt %d failed (%s); retrying", attempt + 1, last)
                time.sleep(self.backoff_s * 2**attempt)
        return Failed(f"chat endpoint failed after {self.max_retries + 1} attempts: {last}")

    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, conversations, seeds))

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url,
                "temperature": self.temperature, "max_tokens": self.max_tokens, "stop": self.stop}


GENERATORS.register("local", LocalChatGenerator)
GENERATORS.register("openai", OpenAIChatGenerator)
GENERATORS.register("procedural", "brainrl.sbi.simulation.procedural:ProceduralGenerator")
