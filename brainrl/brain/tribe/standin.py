"""A TRIBE v2 stand-in with random weights, built by TRIBE v2's own code: its config, its fusion model, and
feature models of the right architecture under the hub names the config uses. For the real-stack test tier
(tiny shapes), ``brainrl tribe parity``'s test and ``scripts/bench_tribe.py`` (real shapes), where the real
weights are not available. Runs in the TRIBE environment (tribev2, neuralset, exca importable).

- tribev2's source comes from a checkout at a pinned commit, ``$BRAINRL_TRIBEV2_SRC`` (see
  scripts/setup_tribe_tier.sh); neuralset, neuraltrain and exca are the PyPI wheels.
- ``config.yaml`` is tribev2's own ``base_config`` or ``mini_config`` ("TRIBE v2 mini"), validated by its
  ``TribeExperiment`` and written from ``model_dump()`` (what ``from_pretrained`` reads back), with only the
  fusion model shrunk and the cluster/wandb settings of a training job removed.
- ``best.ckpt`` holds the state dict of tribev2's own ``FmriEncoder`` built from that config, saved the way
  ``from_pretrained`` loads it (``model_build_args`` + ``state_dict`` with keys prefixed ``model.``).
- The feature models are tiny random ``LlamaModel`` / ``Qwen3Model`` / ``Wav2Vec2BertModel`` saved under the
  hub names the config uses (``meta-llama/Llama-3.2-3B``, ``Qwen/Qwen3-0.6B``, ``facebook/w2v-bert-2.0``)
  inside a folder that must be the working directory: transformers loads a relative name that exists
  as a local folder from that folder, and neuralset's offline list of known hub repositories accepts the
  names, so neither hub nor neuralset is patched.

No tribev2 code is copied here (CC-BY-NC): it is imported from the checkout.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

#: The tribev2 commit this tier was written and run against (facebookresearch/tribev2, 2026-03-30).
TRIBEV2_COMMIT = "72399081ed3f1040c4d996cefb2864a4c46f5b8e"
SRC_ENV = "BRAINRL_TRIBEV2_SRC"

#: Hidden sizes of the video models named by tribev2's configs (vjepa2 ViT-g for base, ViT-L for mini): the
#: fusion model's video projector is built for them even though text-only stimuli never fill it.
VIDEO_DIMS = {"base": 1408, "mini": 1024}
HIDDEN = 32
N_VERTICES = 20484
VARIANTS = ("base", "base-nocache", "mini")
SHAPES = ("tiny", "real")


def tribev2_source() -> Path | None:
    """The checkout named by ``$BRAINRL_TRIBEV2_SRC`` if it holds tribev2's package, else None."""
    value = os.environ.get(SRC_ENV)
    if not value or not (Path(value) / "tribev2" / "demo_utils.py").is_file():
        return None
    return Path(value)


def _tokenizer(corpus: list[str]):
    from brainrl.brain.tribe.features import build_byte_bpe_tokenizer

    tokenizer = build_byte_bpe_tokenizer(corpus, vocab_size=500)
    tokenizer.pad_token = None  # as Llama 3 ships: neuralset then pads with EOS
    return tokenizer


def build_feature_models(hub: Path, corpus: list[str], shape: str = "tiny") -> None:
    """Random stand-ins for the three feature models, saved under their hub names in ``hub``: tiny, or at
    the real models' shapes (Llama-3.2-3B, Qwen3-0.6B, w2v-bert-2.0; a toy tokenizer either way)."""
    import torch
    from transformers import (LlamaConfig, LlamaModel, Qwen3Config, Qwen3Model, SeamlessM4TFeatureExtractor,
                              Wav2Vec2BertConfig, Wav2Vec2BertModel)

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}; got {shape!r}")
    torch.manual_seed(0)
    tokenizer = _tokenizer(corpus)
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    if shape == "tiny":
        common = dict(hidden_size=HIDDEN, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, **ids)
        # 24 layers (25 hidden states), so that cache_n_layers=20 really sub-selects
        llama = LlamaModel(LlamaConfig(num_hidden_layers=24, **common))
        qwen = Qwen3Model(Qwen3Config(num_hidden_layers=6, head_dim=8, **common))
        w2v_config = Wav2Vec2BertConfig(hidden_size=HIDDEN, num_hidden_layers=4, num_attention_heads=4,
                                        intermediate_size=64, output_hidden_size=HIDDEN)
    else:  # the published shapes (vocabulary aside: the toy tokenizer's)
        llama = LlamaModel(LlamaConfig(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                       num_attention_heads=24, num_key_value_heads=8, rope_theta=500000.0, **ids))
        qwen = Qwen3Model(Qwen3Config(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, **ids))
        w2v_config = Wav2Vec2BertConfig()  # w2v-bert-2.0: 24 conformer layers, d=1024
    for model, name in ((llama, "meta-llama/Llama-3.2-3B"), (qwen, "Qwen/Qwen3-0.6B")):
        folder = hub / name
        model.to(torch.bfloat16).save_pretrained(folder)  # hub checkpoints are bf16
        tokenizer.save_pretrained(folder)
    w2v = Wav2Vec2BertModel(w2v_config)
    folder = hub / "facebook/w2v-bert-2.0"
    w2v.save_pretrained(folder)
    SeamlessM4TFeatureExtractor().save_pretrained(folder)


def experiment_config(variant: str, scratch: Path, shape: str = "tiny",
                      overrides: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """tribev2's own config for ``variant``: the validated ``TribeExperiment`` and its ``model_dump()``.
    ``overrides``: more config keys (e.g. ``{"data.duration_trs": 6}`` for short windows), set last."""
    from tribev2.grids.configs import base_config, mini_config
    from tribev2.main import TribeExperiment

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    config = copy.deepcopy(mini_config if variant == "mini" else base_config)
    if shape == "tiny":
        config.update({
            "brain_model_config.hidden": 96,
            "brain_model_config.low_rank_head": 16,
            "brain_model_config.encoder.depth": 1,
            "brain_model_config.encoder.heads": 2,
        })
    config.update({
        "wandb_config": None,
        "infra.cluster": None,
        "infra.folder": str(scratch / "xp"),
        "average_subjects": True,
        "checkpoint_path": str(scratch / "xp" / "best.ckpt"),  # as on the hub: skips the study summary
    })
    if variant == "base-nocache":  # tribev2's default_config leaves cache_n_layers unset
        config["data.text_feature.cache_n_layers"] = None
        config["data.audio_feature.cache_n_layers"] = None
    config.update(overrides or {})
    experiment = TribeExperiment(**config)
    return experiment, experiment.model_dump()


def feature_dims(dumped: dict[str, Any], variant: str, shape: str = "tiny") -> dict[str, tuple[int, int]]:
    """(layer groups, width) per modality, as the extractors hand them to the fusion model."""
    data = dumped["data"]
    if data["layer_aggregation"] == "group_mean":
        groups = len(data["layers_to_use"]) - 1
    else:  # "mean" over the chosen layers (mini)
        groups = 1
    video = VIDEO_DIMS["mini" if variant == "mini" else "base"]
    if shape == "tiny":
        return {"text": (groups, HIDDEN), "audio": (groups, HIDDEN), "video": (groups, video)}
    text = 1024 if variant == "mini" else 3072  # Qwen3-0.6B, Llama-3.2-3B
    return {"text": (groups, text), "audio": (groups, 1024), "video": (groups, video)}


def build_checkpoint(variant: str, folder: Path, scratch: Path, seed: int = 0, shape: str = "tiny",
                     overrides: dict[str, Any] | None = None) -> Path:
    """``folder`` with tribev2's config.yaml and a best.ckpt of its own FmriEncoder (random weights)."""
    import torch
    import yaml

    experiment, dumped = experiment_config(variant, scratch, shape, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "config.yaml", "w") as handle:
        yaml.safe_dump(_plain(dumped), handle, sort_keys=False)
    args = {"feature_dims": feature_dims(dumped, variant, shape), "n_outputs": N_VERTICES,
            "n_output_timesteps": dumped["data"]["duration_trs"]}
    torch.manual_seed(seed)
    model = experiment.brain_model_config.build(**args)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_build_args": args, "state_dict": state}, folder / "best.ckpt")
    return folder


def _plain(value: Any) -> Any:
    """model_dump() output with tuples and paths as YAML's plain types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
