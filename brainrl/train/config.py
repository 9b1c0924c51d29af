"""Typed configuration of a training run; a recipe YAML maps onto ``RecipeConfig`` (see recipe.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from brainrl.brain.pipeline import PipelineConfig
from brainrl.configs import check_range, locate
from brainrl.evaluation.config import EvalConfig
from brainrl.registry import closest_names
from brainrl.policy.lora import LoraConfig
from brainrl.policy.sampling import DecodingConfig, SamplingConfig
from brainrl.rewards.loading import RewardConfig
from brainrl.train.audit import AuditConfig

#: what trl.GRPOTrainer (1.14-1.16) implements; GRPOConfig itself accepts any string and fails mid-run
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo", "luspo")
GRPO_SCALE_REWARDS = ("group", "batch", "none")

DEFAULT_SYSTEM_PROMPT = "You are a helpful writer. Answer in a few clear, well-formed sentences."


@dataclass
class PolicyConfig:
    """Which generator to tune: ``smollm2`` (embedded), a hub id, a local folder or a .gguf file."""

    model: str = "smollm2"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lora: LoraConfig = field(default_factory=LoraConfig)
    trust_remote_code: bool = False
    #: how completions are computed (merged adapter, KV cache, compiled decoding): speed, not the distribution
    generation: DecodingConfig = field(default_factory=DecodingConfig)


@dataclass
class DataConfig:
    """Prompt files: one prompt per line (blank lines and lines starting with # are skipped)."""

    train: str = "recipes/data/prompts_train.txt"
    heldout: str = "recipes/data/prompts_heldout.txt"
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT


@dataclass
class AWSFTConfig:
    """Advantage-weighted SFT with a KL penalty to the base model (adapter disabled)."""

    steps: int = 40
    prompts_per_step: int = 4
    completions_per_prompt: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 2
    #: cosine decays to learning_rate * min_lr_ratio
    min_lr_ratio: float = 0.1
    beta: float = 0.05
    #: advantages are (r - mean_g) / max(std_g, std_floor) within each prompt's group
    std_floor: float = 1e-3
    max_grad_norm: float = 1.0
    #: completions per forward/backward chunk in the update (gradients are accumulated); 0 = all at once
    update_batch_size: int = 0
    checkpoint_every: int = 10
    #: keep only the newest N checkpoints (0 = keep all)
    keep_checkpoints: int = 2
    #: every N steps (0 = never) the generation path also returns its log-probs of the sampled tokens and the
    #: step logs ``logprob_drift_max``, their largest gap to the update's forward (on-policy check)
    logprob_check_every: int = 10

    def __post_init__(self) -> None:
        for name in ("steps", "prompts_per_step"):
            check_range(f"awsft.{name}", getattr(self, name), 1)
        check_range("awsft.completions_per_prompt", self.completions_per_prompt, 2,
                    fix="Advantages are normalised within each prompt's group of completions.")
        check_range("awsft.learning_rate", self.learning_rate, 0, low_open=True)
        check_range("awsft.weight_decay", self.weight_decay, 0)
        check_range("awsft.warmup_steps", self.warmup_steps, 0)
        check_range("awsft.min_lr_ratio", self.min_lr_ratio, 0, 1)
        check_range("awsft.beta", self.beta, 0, fix="beta weighs the KL penalty to the base model; 0 turns it off.")
        check_range("awsft.std_floor", self.std_floor, 0, low_open=True)
        check_range("awsft.max_grad_norm", self.max_grad_norm, 0, low_open=True,
                    fix="It is the gradient-clipping norm; a very large value (1e9) effectively turns clipping off.")
        check_range("awsft.update_batch_size", self.update_batch_size, 0,
                    fix="It is the completions per forward/backward chunk; 0 = all at once.")
        check_range("awsft.checkpoint_every", self.checkpoint_every, 0, fix="0 = only the final checkpoint.")
        check_range("awsft.keep_checkpoints", self.keep_checkpoints, 0, fix="0 = keep all.")
        check_range("awsft.logprob_check_every", self.logprob_check_every, 0, fix="0 = never check.")


@dataclass
class GRPORecipeConfig:
    """Recipe fields mapped onto ``trl.GRPOConfig``; ``extra`` passes any other GRPOConfig field by name
    (checked against GRPOConfig, so a typo fails at once)."""

    steps: int = 40
    prompts_per_step: int = 4
    num_generations: int = 4
    learning_rate: float = 1e-4
    #: > 0 keeps the KL penalty to the base model (brain rewards are easy to hack)
    beta: float = 0.04
    loss_type: str = "grpo"
    scale_rewards: str = "group"
    max_grad_norm: float = 1.0
    warmup_steps: int = 2
    lr_scheduler_type: str = "cosine"
    checkpoint_every: int = 10
    #: temperature of the log-probabilities in the loss and KL; None: the sampling temperature (TRL's own choice).
    #: 1.0 scores the tempered samples under the untempered policy, as AWSFT does (sampling stays at
    #: ``sampling.temperature``)
    loss_temperature: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.loss_temperature is not None:
            check_range("grpo.loss_temperature", self.loss_temperature, 0, low_open=True,
                        fix="It divides the logits in the loss; leave it out to use the sampling temperature.")
        check_range("grpo.num_generations", self.num_generations, 2,
                    fix="GRPO normalises rewards within a prompt's group of completions.")
        for name in ("steps", "prompts_per_step", "checkpoint_every"):
            check_range(f"grpo.{name}", getattr(self, name), 1)
        check_range("grpo.learning_rate", self.learning_rate, 0, low_open=True)
        check_range("grpo.beta", self.beta, 0, fix="beta weighs the KL penalty to the base model; 0 turns it off.")
        check_range("grpo.max_grad_norm", self.max_grad_norm, 0, low_open=True,
                    fix="It is the gradient-clipping norm; a very large value (1e9) effectively turns clipping off.")
        check_range("grpo.warmup_steps", self.warmup_steps, 0)
        for name, valid in (("loss_type", GRPO_LOSS_TYPES), ("scale_rewards", GRPO_SCALE_REWARDS)):
            if getattr(self, name) not in valid:
                close = closest_names(str(getattr(self, name)), list(valid))
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"grpo.{name} {getattr(self, name)!r} is not one of {', '.join(valid)}.{hint}")


@dataclass
class LoggingConfig:
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    project: str = "brainrl"
    log_every: int = 1
    #: completions written per step to completions.jsonl (0 = none, -1 = all)
    completions_per_step: int = -1
    progress: bool = True

    def __post_init__(self) -> None:
        check_range("logging.log_every", self.log_every, 1, fix="Metrics are sent to the trackers every N steps.")
        check_range("logging.completions_per_step", self.completions_per_step, -1, fix="0 = none, -1 = all.")


@dataclass
class RecipeConfig:
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs/run"
    trainer: Literal["awsft", "grpo"] = "awsft"
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    brain: PipelineConfig = field(default_factory=PipelineConfig)
    rewards: list[RewardConfig] = field(default_factory=list)
    awsft: AWSFTConfig = field(default_factory=AWSFTConfig)
    grpo: GRPORecipeConfig = field(default_factory=GRPORecipeConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: student-teacher audit of a surrogate reward (brainrl/train/audit.py)
    audit: AuditConfig = field(default_factory=AuditConfig)
    #: the YAML file this recipe was read from (set by ``load_recipe``; not a recipe field)
    source_path: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.rewards:
            raise ValueError("A recipe needs at least one reward: rewards: [{path: rewards/broca.py}].")
        check_range("recipe.seed", self.seed, 0)
        for i, spec in enumerate(self.rewards):
            check_range(f"recipe.rewards[{i}].weight", spec.weight, fix="A reward weight is a finite number.")
            if not str(spec.path).strip():
                raise ValueError(f"recipe.rewards[{i}].path is empty; name a reward file, e.g. rewards/broca.py.")

    def resolve(self, relative: str | Path, *more_bases: str | Path) -> Path:
        """A path named in the recipe: as given (cwd), else next to the recipe file, else in the recipe's
        parent folder (so ``recipes/x.yaml`` can name ``rewards/broca.py`` from anywhere), else in
        ``more_bases`` (a run folder)."""
        bases = [Path(self.source_path).parent, Path(self.source_path).parent.parent] if self.source_path else []
        return locate(relative, [*bases, *more_bases])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("source_path")
        return out
