"""Paired sampling: base (the PEFT model with its adapter disabled) and tuned draw completions for the
same prompts with the same seeds, through the policy's batched ``sample_completions``.

Seed rule: prompts are taken ``batch_prompts`` at a time; batch ``b`` is sampled with seed ``seed + b``
by both models, ``per_prompt`` completions per prompt in one ``generate`` call. The same prompts, seed,
batch size and sampling settings give the same completions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.policy.sampling import DecodingConfig, SamplingConfig

log = logging.getLogger(__name__)

MODELS = ("base", "tuned")


@dataclass
class PairedSamples:
    """Both models' completions, aligned: completion ``i`` of base and of tuned answer the same prompt
    with the same seed."""

    prompts: list[str]  # the prompts, in the order given
    prompt_index: np.ndarray  # (N,) index into ``prompts`` of completion i (the same for both models)
    texts: dict[str, list[str]]  # "base" / "tuned" -> N texts ("base" alone for a base-only run)
    tokens: dict[str, np.ndarray]  # completion tokens, (N,) per model
    kl_to_base: float | None  # exact full-vocabulary KL(tuned‖base) per token over the tuned completions
    settings: dict[str, Any]  # sampling, seed rule, per_prompt, batch_prompts, system prompt
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return int(self.prompt_index.size)

    def prompts_of(self) -> list[str]:
        """The prompt of each completion."""
        return [self.prompts[i] for i in self.prompt_index.tolist()]


def load_pair(base: str, adapter: str | Path, *, dtype: str = "auto", device: str | None = None,
              trust_remote_code: bool = False, model=None, tokenizer=None) -> tuple[Any, Any, dict[str, Any]]:
    """The base policy with the LoRA adapter attached (PEFT); ``disable_adapter()`` gives the base back.

    Returns (model, tokenizer, sampling defaults the model's own generation config held and that were
    dropped). ``model``/``tokenizer`` skip loading (tests, notebooks)."""
    import torch
    from peft import PeftModel

    from brainrl.policy import load_policy, neutralise_generation_config

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} holds no LoRA adapter (adapter_config.json): did the run finish? "
                                "Resume it with --resume, or pass --adapter DIR (e.g. RUN/checkpoint-000010/adapter).")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if model is None:
        model, tokenizer = load_policy(base, dtype, device, trust_remote_code=trust_remote_code)
    dropped = neutralise_generation_config(model, tokenizer)
    from brainrl.policy.loading import quiet_loading

    with quiet_loading():  # no "Loading weights" bar, no PEFT FutureWarning
        model = PeftModel.from_pretrained(model, str(adapter)).to(device).eval()
    return model, tokenizer, dropped


def sample_pair(model, tokenizer, prompts: Sequence[str], sampling: SamplingConfig, *, per_prompt: int, seed: int,
                batch_prompts: int = 8, system: str | None = None, kl: bool = True, progress: bool = True,
                generation: DecodingConfig | None = None, base_only: bool = False) -> PairedSamples:
    """``per_prompt`` completions per prompt from tuned and from base (adapter disabled), paired by seed.
    ``generation`` (the recipe's ``policy.generation``) chooses merged-adapter generation and the KV cache;
    it changes speed and float rounding, not the distribution sampled. ``base_only`` samples the base alone
    (any model; with an adapter attached, it is disabled), with the same seeds as a paired run."""
    from tqdm.auto import tqdm

    from brainrl.policy.logprobs import kl_to_base
    from brainrl.policy.sampling import sample_completions

    has_adapter = hasattr(model, "disable_adapter")
    if not has_adapter and not base_only:
        raise TypeError("sample_pair needs a PEFT model (base + adapter); load it with load_pair(base, adapter), "
                        "or pass base_only=True.")
    models = ("base",) if base_only else MODELS
    kl = kl and not base_only
    prompts = list(prompts)  # as given: prompt_index refers to these positions (callers merge duplicates)
    if not prompts:
        raise ValueError("No prompts to evaluate on.")
    if per_prompt < 1 or batch_prompts < 1:
        raise ValueError(f"per_prompt and batch_prompts must be >= 1; got {per_prompt}, {batch_prompts}.")
    started = time.perf_counter()
    texts: dict[str, list[str]] = {m: [] for m in models}
    tokens: dict[str, list[int]] = {m: [] for m in models}
    index: list[int] = []
    kl_sum, kl_tokens = 0.0, 0.0
    starts = range(0, len(prompts), batch_prompts)
    for b, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not progress or len(starts) < 2)):
        batch = prompts[start:start + batch_prompts]
        kwargs = dict(num_completions=per_prompt, system=system, seed=seed + b, temperature=sampling.temperature,
                      generation=generation)
        drawn = {} if base_only else {"tuned": sample_completions(model, tokenizer, batch, sampling, **kwargs)}
        with model.disable_adapter() if has_adapter else contextlib.nullcontext():
            drawn["base"] = sample_completions(model, tokenizer, batch, sampling, **kwargs)
        if kl:
            total, count = kl_to_base(model, drawn["tuned"])
            kl_sum, kl_tokens = kl_sum + total, kl_tokens + count
        for name in models:
            texts[name] += drawn[name].texts
            tokens[name] += drawn[name].lengths.tolist()
        index += [start + int(g) for g in drawn["base"].group]
    settings = {
        "sampling": {**asdict(sampling), "temperature_used": sampling.temperature},
        "seed": seed, "seed_rule": "batch b of batch_prompts prompts uses seed + b, for both models",
        "per_prompt": per_prompt, "batch_prompts": batch_prompts, "system_prompt": system,
    }
    if sampling.temperature_end is not None:
        settings["note"] = (f"training annealed the temperature to {sampling.temperature_end}; both models are "
                            f"sampled at the starting temperature {sampling.temperature}")
    return PairedSamples(prompts, np.asarray(index, np.int64), texts,
                         {m: np.asarray(v, np.float64) for m, v in tokens.items()},
                         kl_sum / kl_tokens if kl and kl_tokens else None, settings, time.perf_counter() - started)
