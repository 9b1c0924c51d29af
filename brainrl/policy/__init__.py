"""Generator policies: loading (hub, folder, GGUF, the embedded SmolLM2), chat prompts, LoRA and sampling."""

from brainrl.policy.loading import EMBEDDED_POLICIES, convert_gguf, load_policy, resolve_policy, smollm2_gguf_path
from brainrl.policy.lora import LoraConfig, attach_lora, trainable_parameters
from brainrl.policy.sampling import (
    Samples,
    SamplingConfig,
    chat_prompt,
    completion_mask,
    neutralise_generation_config,
    sample_completions,
)

__all__ = [
    "EMBEDDED_POLICIES",
    "LoraConfig",
    "Samples",
    "SamplingConfig",
    "attach_lora",
    "chat_prompt",
    "completion_mask",
    "convert_gguf",
    "load_policy",
    "neutralise_generation_config",
    "resolve_policy",
    "sample_completions",
    "smollm2_gguf_path",
    "trainable_parameters",
]
