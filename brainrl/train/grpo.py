"""GRPO through ``trl.GRPOTrainer`` with the recipe's policy, LoRA, rewards and sampling.

TRL does generation, reward batching, group-normalised advantages, the KL to the adapter-disabled base
(``beta`` > 0: no second model copy), per-reward logging (``rewards/<name>/mean``), checkpoints and
resume. This module maps recipe fields onto ``GRPOConfig`` (checking them), defaults that run on CPU, a
JSONL metrics file and the same run card as AWSFT. Generation runs through merged adapter weights, with
a static KV cache and compiled decoding where ``policy.generation`` resolves to them (as in AWSFT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from brainrl.configs import check_field
from brainrl.policy.lora import MergedWeights, merged_adapter
from brainrl.policy.sampling import DecodingConfig
from brainrl.train import runs
from brainrl.train.config import RecipeConfig
from brainrl.train.recipe import RecipeError, read_prompt_rows, resolve_path

log = logging.getLogger(__name__)

#: GRPOConfig fields set from other recipe sections; ``grpo.extra`` may not set them again.
MAPPED_FIELDS = ("output_dir", "max_steps", "per_device_train_batch_size", "num_generations", "learning_rate", "beta",
                 "loss_type", "scale_rewards", "max_grad_norm", "warmup_steps", "lr_scheduler_type", "save_steps",
                 "save_strategy", "logging_steps", "report_to", "seed", "use_cpu", "bf16", "max_completion_length",
                 "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "reward_weights", "disable_tqdm",
                 "cache_implementation")


def grpo_config(recipe: RecipeConfig, reward_weights: Sequence[float], output_dir: str | Path | None = None):
    """A ``trl.GRPOConfig`` from the recipe; unknown or conflicting ``grpo.extra`` keys fail naming the key."""
    from trl import GRPOConfig

    g, s = recipe.grpo, recipe.sampling
    if s.temperature_end is not None:
        raise RecipeError("sampling.temperature_end: a temperature schedule is not supported by GRPOTrainer; "
                          "remove it or use trainer: awsft.")
    names = [f.name for f in dataclasses.fields(GRPOConfig)]
    for key in g.extra:
        check_field(key, names, "grpo.extra", owner="trl.GRPOConfig")
        if key in MAPPED_FIELDS:
            raise RecipeError(f"grpo.extra.{key} is set from the recipe already; change it there, not in extra.")
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir or recipe.output_dir),
        max_steps=g.steps,
        per_device_train_batch_size=g.prompts_per_step * g.num_generations,  # counts completions
        num_generations=g.num_generations,
        learning_rate=g.learning_rate,
        beta=g.beta,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        max_grad_norm=g.max_grad_norm,
        warmup_steps=g.warmup_steps,
        lr_scheduler_type=g.lr_scheduler_type,
        save_strategy="steps",
        save_steps=g.checkpoint_every,
        logging_steps=recipe.logging.log_every,
        report_to=runs.available_trackers(recipe.logging.report_to) or "none",
        seed=recipe.seed,
        use_cpu=not cuda,
        bf16=cuda and recipe.policy.dtype in ("auto", "bfloat16"),
        max_completion_length=s.max_new_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k,
        min_p=s.min_p,
        repetition_penalty=s.repetition_penalty,
        reward_weights=list(reward_weights),
        disable_tqdm=not recipe.logging.progress,
        disable_dropout=True,  # the policy scored is the policy that sampled
        remove_unused_columns=False,
    )
    engine = recipe.policy.generation.resolve("cuda" if cuda else "cpu")
    kwargs["cache_implementation"] = "static" if engine["cache"] == "static" else None
    if engine["cache"] == "static" and "pad_to_multiple_of" not in g.extra:
        kwargs["pad_to_multiple_of"] = 32  # few prompt shapes for the static cache and the compiled decoder
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kwargs[checkpointing] = False
    if cuda:
        kwargs[checkpointing] = g.extra.get(checkpointing, False)
    kwargs.update(g.extra)
    if g.loss_temperature is not None:  # TRL scores log-probs at its `temperature`; sampling then comes from generation_kwargs
        sampling_kwargs = dict(g.extra.get("generation_kwargs") or {})
        if "temperature" in sampling_kwargs:
            raise RecipeError("grpo.extra.generation_kwargs.temperature conflicts with grpo.loss_temperature; set the "
                              "sampling temperature in sampling.temperature.")
        kwargs["temperature"] = g.loss_temperature
        kwargs["generation_kwargs"] = {**sampling_kwargs, "temperature": s.temperature}
    try:
        return GRPOConfig(**kwargs)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"grpo: trl.GRPOConfig rejected the settings: {err}") from err


def _trainer_class():
    """``trl.GRPOTrainer`` with brainrl's generation engine (built lazily: TRL imports are slow)."""
    from trl import GRPOTrainer

    class BrainrlGRPOTrainer(GRPOTrainer):
        """Generates through merged LoRA weights (``brainrl.policy.lora.merged_adapter``: exact weights
        restored for the update) and, where ``policy.generation`` resolves to it, compiled decoding over a
        static cache; TRL fixes ``disable_compile=True``, which this lifts only then. vLLM generation is
        TRL's own and left unchanged."""

        def __init__(self, *args, generation: DecodingConfig, **kwargs):
            super().__init__(*args, **kwargs)
            self.brainrl_generation = generation
            self.merged_weights = MergedWeights()
            if not hasattr(GRPOTrainer, "_generate_single_turn"):
                log.warning("this TRL version has no GRPOTrainer._generate_single_turn; generating unmerged")
            device = self.accelerator.device
            if generation.resolve(device)["compile"] and not self.use_vllm:
                config = generation.generate_kwargs(device)["compile_config"]
                self.generation_config.disable_compile = False
                self.generation_config.compile_config = config

        def create_scheduler(self, num_training_steps, optimizer=None):
            """transformers' warm-up gives the first update learning rate 0 (a wasted step): shift the warm-up
            by one step, as AWSFT's, so step 1 uses lr/warmup and step ``warmup`` the full rate."""
            scheduler = super().create_scheduler(num_training_steps, optimizer)
            warmup = self.args.get_warmup_steps(num_training_steps)
            if warmup > 0 and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) and not getattr(
                    scheduler, "brainrl_shifted", False):
                scheduler.lr_lambdas = [_ShiftedWarmup(f, warmup) for f in scheduler.lr_lambdas]
                lrs = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
                for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                    group["lr"] = lr
                scheduler._last_lr = lrs
                scheduler.brainrl_shifted = True
            return scheduler

        def _generate_single_turn(self, *args, **kwargs):
            merge = self.brainrl_generation.merge_adapter and not self.use_vllm
            policy = self.accelerator.unwrap_model(self.model)
            with merged_adapter(policy, self.merged_weights) if merge else contextlib.nullcontext(False):
                return super()._generate_single_turn(*args, **kwargs)

    return BrainrlGRPOTrainer


class _ShiftedWarmup:
    """``f(step + 1)`` during warm-up, ``f(step)`` after it (picklable, for scheduler state dicts)."""

    def __init__(self, f: Callable[[int], float], warmup: int):
        self.f, self.warmup = f, warmup

    def __call__(self, step: int) -> float:
        return self.f(step + 1) if step < self.warmup else self.f(step)


class _CompletionLog:
    """Reward callables wrapped so each scored batch is written to completions.jsonl (prompt, completion,
    weighted reward, each reward's value), as AWSFT writes it. The last wrapper of a round writes the rows."""

    def __init__(self, funcs: Sequence[Callable], weights: Sequence[float], path: Path, limit: int, write: bool):
        self.funcs, self.weights = list(funcs), list(weights)
        self.writer = runs.JsonlWriter(path)
        self.limit, self.write = limit, write
        self.pending: dict[str, list] = {}
        self.wrapped = [_LoggedReward(self, i) for i in range(len(self.funcs))]

    def record(self, index: int, kwargs: dict[str, Any], values: list) -> None:
        self.pending[getattr(self.funcs[index], "__name__", str(index))] = list(values)
        if index != len(self.funcs) - 1:
            return
        pending, self.pending = self.pending, {}
        if not self.write or self.limit == 0:
            return
        from brainrl.rewards import completion_text

        state = kwargs.get("trainer_state")
        step = (state.global_step + 1) if state is not None else None
        prompts, completions = kwargs.get("prompts") or [], kwargs.get("completions") or []
        rows = range(len(completions)) if self.limit < 0 else range(min(self.limit, len(completions)))
        for i in rows:
            parts = {name: (None if v[i] is None else float(v[i])) for name, v in pending.items()}
            total = None if any(v is None for v in parts.values()) else sum(
                w * v for w, v in zip(self.weights, parts.values()))
            prompt = prompts[i] if i < len(prompts) else None
            if isinstance(prompt, list):  # conversational: the user's turn
                prompt = next((m.get("content") for m in reversed(prompt) if m.get("role") == "user"), None)
            self.writer.write({"step": step, "prompt": prompt, "completion": completion_text(completions[i]),
                               "reward": total, "rewards": parts})


class _LoggedReward:
    """One reward of a ``_CompletionLog``; keeps the wrapped reward's ``__name__`` (TRL's metric key)."""

    def __init__(self, log_: _CompletionLog, index: int):
        self.log, self.index = log_, index
        self.__name__ = getattr(log_.funcs[index], "__name__", f"reward_{index}")

    def __call__(self, prompts=None, completions=None, **kwargs):
        values = self.log.funcs[self.index](prompts=prompts, completions=completions, **kwargs)
        try:
            self.log.record(self.index, {"prompts": prompts, "completions": completions, **kwargs}, values)
        except Exception as err:  # the log must never stop training
            log.warning("completions.jsonl: could not write a row: %s", err)
        return values


def _quiet_progress(trainer) -> None:
    """Keep TRL's progress bar but not the metrics dict it prints every logging step (metrics.jsonl and the
    trackers hold them); the bar shows reward and KL instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {k: f"{v:.4g}" for k, v in logs.items() if k in ("reward", "kl") and isinstance(v, (int, float))}
                if shown:
                    self.training_bar.set_postfix(shown, refresh=False)

    trainer.pop_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(QuietProgress())


def prompt_dataset(prompts: Sequence[str], system: str | None, columns: Sequence[dict[str, Any]] | None = None):
    """A conversational ``datasets.Dataset`` (TRL applies the chat template); ``columns`` (one dict per
    prompt, e.g. ``theta_target``) become dataset columns, which TRL passes to the reward functions."""
    from datasets import Dataset

    rows = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}]
            for p in prompts]
    extra = {name: [c[name] for c in columns] for name in columns[0]} if columns and columns[0] else {}
    return Dataset.from_dict({"prompt": rows, **extra})


class _JsonlMetrics:
    """A TrainerCallback writing each logged dict to metrics.jsonl with its step."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        writer = runs.JsonlWriter(path)

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    writer.write({"step": state.global_step, **logs})

        self.callback = Callback()
        self.writer = writer


def train_grpo(recipe: RecipeConfig, *, model=None, tokenizer=None, reward_funcs: Sequence[Callable] | None = None,
               reward_weights: Sequence[float] | None = None, train_prompts: Sequence[str] | None = None,
               resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train with GRPOTrainer; saves ``adapter/``, ``metrics.jsonl`` and ``run_card.json`` in output_dir."""
    from brainrl.policy import load_policy, neutralise_generation_config, trainable_parameters

    output_dir = Path(recipe.output_dir)
    if output_dir.exists() and (output_dir / runs.RUN_CARD).exists() and not resume:
        if not overwrite:
            raise ValueError(f"{output_dir} already holds a run. Pass --resume to continue it, --overwrite to "
                             "replace it, or --set output_dir=<new folder>.")
        shutil.rmtree(output_dir)
    if reward_funcs is None:
        reward_funcs, reward_weights = runs.build_rewards(recipe)
    reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(reward_funcs)
    args = grpo_config(recipe, reward_weights)
    from accelerate import PartialState

    if recipe.audit.enabled:  # surrogate rewards checked against their teacher (brainrl/train/audit.py)
        from brainrl.train.audit import audit_rewards

        reward_funcs = audit_rewards(recipe, reward_funcs, output_dir, write=PartialState().is_main_process)

    device = str(PartialState().device)  # this rank's own GPU (or the CPU), so no rank lands on GPU 0 first
    if model is None:
        model, tokenizer = load_policy(recipe.policy.model, recipe.policy.dtype, device,
                                       trust_remote_code=recipe.policy.trust_remote_code)
    dropped = neutralise_generation_config(model, tokenizer)
    source = getattr(model, "brainrl_source", {"spec": recipe.policy.model})
    columns = None
    if train_prompts is not None:
        prompts = list(train_prompts)
    else:
        prompts, columns = read_prompt_rows(resolve_path(recipe, recipe.data.train))
    metrics = _JsonlMetrics(output_dir / "metrics.jsonl")
    if resume:
        metrics.writer.path.unlink(missing_ok=True)  # TRL replays nothing; the log restarts at the checkpoint
    if resume:
        (output_dir / "completions.jsonl").unlink(missing_ok=True)  # restarts with the metrics log
    logged = _CompletionLog(reward_funcs, reward_weights, output_dir / "completions.jsonl",
                            recipe.logging.completions_per_step, write=PartialState().is_main_process)
    from brainrl.policy.loading import quiet_loading

    with quiet_loading():  # TRL attaches the LoRA adapter here
        trainer = _trainer_class()(model=model, reward_funcs=logged.wrapped, args=args,
                                   train_dataset=prompt_dataset(prompts, recipe.data.system_prompt, columns),
                                   processing_class=tokenizer, peft_config=recipe.policy.lora.peft_config(),
                                   callbacks=[metrics.callback], generation=recipe.policy.generation)
    _quiet_progress(trainer)
    trainable, total = trainable_parameters(trainer.model)
    if trainer.is_world_process_zero():
        runs.write_run_card(output_dir, recipe, reward_funcs, reward_weights, {
            "status": "running",
            "policy": {**source, "trainable_parameters": trainable, "total_parameters": total,
                       "lora": recipe.policy.lora.record(), "dropped_generation_defaults": dropped},
            "algorithm": {"name": "grpo", "implementation": "trl.GRPOTrainer", "beta": args.beta,
                          "loss_type": args.loss_type, "reference": "base model with the LoRA adapter disabled",
                          "sampling_temperature": recipe.sampling.temperature,
                          "loss_temperature": args.temperature,  # TRL divides the logits of the loss and KL by it
                          "generation": recipe.policy.generation.resolve(trainer.accelerator.device)},
            "grpo_config": {k: v for k, v in args.to_dict().items() if isinstance(v, (int, float, str, bool, list, type(None)))},
            "accelerate": {"num_processes": trainer.accelerator.num_processes, "device": str(trainer.accelerator.device),
                           "distributed_type": str(trainer.accelerator.distributed_type)},
        })
    from brainrl.policy.loading import quiet_warnings

    with quiet_warnings():  # PEFT's FutureWarning when TRL starts training: nothing a user can act on
        result = trainer.train(resume_from_checkpoint=True if resume and _has_checkpoint(output_dir) else None)
    summary = {"steps": trainer.state.global_step, "train_seconds": result.metrics.get("train_runtime"),
               "last": trainer.state.log_history[-2] if len(trainer.state.log_history) > 1 else {}}
    if trainer.is_world_process_zero():
        trainer.save_model(str(output_dir / "adapter"))
        tokenizer.save_pretrained(output_dir / "adapter")
        runs.update_run_card(output_dir, status="finished", summary=summary)
        runs.write_model_card(output_dir / "adapter", output_dir)
    return summary


def _has_checkpoint(output_dir: Path) -> bool:
    return any(p.name.startswith("checkpoint-") for p in output_dir.iterdir()) if output_dir.exists() else False
