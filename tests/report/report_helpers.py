"""Builders for the report tests: synthetic brain maps with planted effects, and a small finished run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from brainrl.cortex.atlas import N_VERTICES
from brainrl.cortex.rois import get_roi

PROMPTS = ["tell a story about a river", "explain the weather", "describe a small garden", "write news about music"]


def synthetic_maps(n: int, seed: int, *, global_shift: float = 0.0, roi: str | None = None, roi_shift: float = 0.0,
                   length_slope: float = 0.0, words: np.ndarray | None = None, noise: float = 0.05,
                   subject_sd: float = 0.05) -> list[np.ndarray]:
    """n maps (T_i, 20,484): per-completion random level + vertex noise, plus known shifts.

    ``roi_shift`` is added to every vertex of ``roi``; ``length_slope * words[i]`` to every vertex."""
    rng = np.random.default_rng(seed)
    mask = get_roi(roi).mask() if roi else None
    out = []
    for i in range(n):
        frames = int(rng.integers(6, 14))
        data = rng.normal(0.0, noise, (frames, N_VERTICES)).astype(np.float32)
        data += np.float32(rng.normal(0.0, subject_sd) + global_shift)
        if words is not None:
            data += np.float32(length_slope * words[i])
        if mask is not None:
            data[:, mask] += np.float32(roi_shift + rng.normal(0.0, subject_sd))
        out.append(data)
    return out


def texts_with_words(words: np.ndarray) -> list[str]:
    return [" ".join(["word"] * int(w)) for w in words]


def make_run(tmp_path: Path, *, completions_per_prompt: int = 2) -> Path:
    """A finished run folder as `brainrl train` writes it: a tiny random policy saved as the base model,
    a LoRA adapter with non-zero B (so tuned ≠ base), run_card.json, metrics.jsonl and held-out prompts."""
    import torch

    from brainrl.policy.lora import LoraConfig, attach_lora
    from brainrl.policy.tiny import tiny_policy

    base_dir, run_dir = tmp_path / "base_model", tmp_path / "run"
    model, tokenizer = tiny_policy(seed=0)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    peft_model = attach_lora(model, LoraConfig(r=4, alpha=8))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(run_dir / "adapter")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "heldout.txt").write_text("# held-out prompts\n" + "\n".join(PROMPTS) + "\n")
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text("name: tiny\n")
    card = {
        "name": "tiny", "trainer": "awsft", "recipe_path": str(recipe_path), "status": "finished",
        "recipe": {
            "name": "tiny", "seed": 3,
            "policy": {"model": str(base_dir), "dtype": "float32", "trust_remote_code": False},
            "data": {"train": "data/train.txt", "heldout": "data/heldout.txt", "system_prompt": "Be brief."},
            "brain": {"speech": "espeak", "speech_kwargs": {}, "model": "synthetic", "model_kwargs": {},
                      "cache_dir": "", "cache_max_gb": 2.0, "memory_items": 1024, "max_words": 300},
            "sampling": {"temperature": 1.0, "temperature_end": 0.7, "top_p": 1.0, "top_k": 0, "min_p": None,
                         "repetition_penalty": 1.0, "max_new_tokens": 12, "do_sample": True},
            "rewards": [{"path": str(Path(__file__).resolve().parents[2] / "rewards" / "broca.py")}],
            "eval": {"roi": "broca", "seed": 7, "sampling": None, "bootstrap": 2000},
        },
        "sampling": {"temperature": 1.0, "temperature_end": 0.7, "top_p": 1.0, "top_k": 0, "min_p": None,
                     "repetition_penalty": 1.0, "max_new_tokens": 12, "do_sample": True},
        "rewards": [{"name": "broca_minus_global", "roi": {"name": "broca"}, "weight": 1.0}],
        "seeds": {"seed": 3, "eval_seed": 7},
    }
    (run_dir / "run_card.json").write_text(json.dumps(card, indent=2))
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for step in range(1, 6):
            fh.write(json.dumps({"step": step, "reward_mean": 0.01 * step, "reward_std": 0.005,
                                 "kl_per_token": 0.002 * step, "loss": 0.1 - 0.01 * step}) + "\n")
    return run_dir
