"""LoRA adapters through peft, configured from the recipe's ``policy.lora`` section, and generation through
merged adapter weights (``merged_adapter``)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class LoraConfig:
    """A recipe's LoRA section. ``dropout`` defaults to 0: the loss then scores the same deterministic
    policy that generated the samples (the anchor measured its KL with dropout on)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = "none"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"policy.lora.r must be >= 1; got {self.r}.")
        if not self.alpha > 0:
            raise ValueError(f"policy.lora.alpha must be > 0; got {self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"policy.lora.dropout must be in [0, 1); got {self.dropout}.")

    def peft_config(self):
        """The ``peft.LoraConfig`` these settings describe."""
        import peft

        return peft.LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, bias=self.bias, task_type="CAUSAL_LM")

    def record(self) -> dict[str, Any]:
        return asdict(self)


def attach_lora(model, settings: LoraConfig):
    """Wrap ``model`` with a fresh LoRA adapter (B = 0, so the tuned policy starts equal to the base)."""
    from peft import get_peft_model

    from brainrl.policy.loading import quiet_loading

    with quiet_loading():
        return get_peft_model(model, settings.peft_config())


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _lora_layers(model) -> list[tuple[str, Any]]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a core dependency
        return []
    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def mergeable(model) -> tuple[bool, str]:
    """Whether ``merged_adapter`` can merge ``model``'s active LoRA adapter, and why not if it cannot."""
    layers = _lora_layers(model)
    if not layers or not hasattr(model, "disable_adapter"):
        return False, "no LoRA adapter"
    for name, layer in layers:
        if layer.disable_adapters:
            return False, "the adapter is disabled (base-model generation)"
        if layer.merged:
            return False, f"{name} is merged already"
        adapters = [a for a in layer.active_adapters if a in layer.lora_A]
        if any(a in getattr(layer, "lora_variant", {}) for a in adapters):
            return False, f"{name} uses a LoRA variant (DoRA, ...): merging is not a plain W + s·BA"
        if any(layer.lora_bias.get(a, False) for a in adapters):
            return False, f"{name} has a LoRA bias"
        weight = getattr(layer.get_base_layer(), "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
            return False, f"{name}'s base weight is not a floating-point tensor (quantised?)"
    return True, ""


class MergedWeights:
    """Persistent buffers holding W + s·BA for every LoRA layer, reused across steps (fixed addresses, which
    CUDA graphs and compiled decoding rely on). ``merged_adapter(model, buffers)`` fills and swaps them in."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}

    def buffer_for(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != weight.shape or buf.dtype != weight.dtype or buf.device != weight.device:
            buf = torch.empty_like(weight)
            self.buffers[name] = buf
        return buf


@contextlib.contextmanager
def merged_adapter(model, buffers: MergedWeights | None = None):
    """Generate through merged LoRA weights; yields whether it merged.

    Inside the context every LoRA layer's base weight *is* W + s·BA (computed in a separate buffer) and
    the adapter branch is off, so a forward costs what the base model costs. The original weight tensors
    are swapped back on exit (not un-merged by subtraction), so training sees exactly the weights it had,
    bit for bit. The merged weights equal the adapter's forward up to float rounding (tests/policy). A
    model that cannot be merged (see ``mergeable``) runs unmerged.
    """
    ok, why = mergeable(model)
    if not ok:
        log.debug("merged_adapter: generating unmerged (%s)", why)
        yield False
        return
    buffers = buffers if buffers is not None else MergedWeights()
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, layer in _lora_layers(model):
                weight = layer.get_base_layer().weight
                buf = buffers.buffer_for(name, weight.data)
                buf.copy_(weight.data)
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        buf.add_(layer.get_delta_weight(adapter).to(buf.dtype))
                swapped.append((weight, weight.data))
                weight.data = buf
        with model.disable_adapter():
            yield True
    finally:
        for weight, original in swapped:
            weight.data = original
