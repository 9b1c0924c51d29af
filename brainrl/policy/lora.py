"""LoRA adapters through peft, configured from the recipe's ``policy.lora`` section."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoraSettings:
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
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, bias=self.bias, task_type="CAUSAL_LM")

    def record(self) -> dict[str, Any]:
        return asdict(self)


def attach_lora(model, settings: LoraSettings):
    """Wrap ``model`` with a fresh LoRA adapter (B = 0, so the tuned policy starts equal to the base)."""
    from peft import get_peft_model

    return get_peft_model(model, settings.peft_config())


def trainable_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
