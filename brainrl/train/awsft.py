"""Advantage-weighted SFT with a KL penalty: the anchor experiment's algorithm, done right.

Per step: P prompts drawn from the training set, N completions each from one batched ``generate``;
all rewards for the whole batch in one call per reward function (weighted sum; a ``None`` drops that
completion from the loss and is counted); advantages normalised within each prompt's group with a std
floor; loss = mean_i(A_i·CE_i + β·KL_i) where CE_i is the mean NLL of completion i under π_θ and KL_i the
token-mean k3 estimate of KL(π_θ‖π_ref), π_ref being the same model with its LoRA adapter disabled.
Dropout is off in both sampling and update, so the policy scored is the policy that sampled.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from brainrl.policy import attach_lora, load_policy, neutralise_generation_config, sample_completions, trainable_parameters
from brainrl.policy.lora import MergedWeights
from brainrl.policy.sampling import Samples
from brainrl.train.audit import AuditStop
from brainrl.train.config import AWSFTConfig, RecipeConfig
from brainrl.train.losses import awsft_loss, completion_logits, group_advantages, token_logprobs
from brainrl.train.recipe import read_prompt_rows, resolve_path
from brainrl.train import runs

log = logging.getLogger(__name__)

__all__ = ["AWSFTConfig", "AWSFTTrainer", "score_rewards", "warmup_cosine"]


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def score_rewards(funcs: Sequence[Callable], weights: Sequence[float], prompts: list[str], completions: list[str],
                  completion_ids: list[list[int]], columns: dict[str, list[Any]] | None = None
                  ) -> tuple[torch.Tensor, dict[str, list[float | None]]]:
    """Call every reward once on the whole batch; total = weighted sum, NaN where any part is None.
    ``columns``: the prompt dataset's extra columns, one entry per completion (as TRL passes them)."""
    per_fn: dict[str, list[float | None]] = {}
    total = torch.zeros(len(completions), dtype=torch.float64)
    for fn, weight in zip(funcs, weights):
        values = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **(columns or {}))
        name = getattr(fn, "__name__", repr(fn))
        if values is None or len(values) != len(completions):
            raise ValueError(f"Reward {name} returned {None if values is None else len(values)} values for "
                             f"{len(completions)} completions; it must return one (float or None) per completion.")
        clean = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
        per_fn[name] = clean
        total += weight * torch.tensor([math.nan if v is None else v for v in clean], dtype=torch.float64)
    return total.float(), per_fn


class AWSFTTrainer:
    """Runs the AWSFT loop of a recipe. ``model``/``tokenizer``/``reward_funcs``/``train_prompts`` may be
    given directly (tests, notebooks); otherwise they come from the recipe."""

    def __init__(self, recipe: RecipeConfig, *, model=None, tokenizer=None, reward_funcs: Sequence[Callable] | None = None,
                 reward_weights: Sequence[float] | None = None, train_prompts: Sequence[str] | None = None,
                 resume: bool = False, overwrite: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.recipe = recipe
        self.cfg: AWSFTConfig = recipe.awsft
        self.output_dir = Path(recipe.output_dir)
        self._check_output_dir(resume, overwrite)
        trackers = runs.available_trackers(recipe.logging.report_to)
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available(), log_with=trackers or None,
                                       project_dir=str(self.output_dir / "logs"))
        set_seed(recipe.seed, device_specific=True)
        acc = self.accelerator
        if model is None:
            model, tokenizer = load_policy(recipe.policy.model, recipe.policy.dtype, str(acc.device),
                                           trust_remote_code=recipe.policy.trust_remote_code)
        elif tokenizer is None:
            raise ValueError("Pass the tokenizer together with the model.")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.dropped_generation_defaults = neutralise_generation_config(model, tokenizer)
        self.source = getattr(model, "brainrl_source", {"spec": recipe.policy.model})
        model = attach_lora(model, recipe.policy.lora)
        model.to(acc.device)
        model.eval()  # dropout off for sampling and update alike
        self.tokenizer = tokenizer
        if reward_funcs is None:
            reward_funcs, reward_weights = runs.build_rewards(recipe)
        self.reward_funcs = list(reward_funcs)
        self.reward_weights = list(reward_weights) if reward_weights is not None else [1.0] * len(self.reward_funcs)
        if len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"{len(self.reward_weights)} reward weights for {len(self.reward_funcs)} rewards.")
        rows: list[dict[str, Any]] = []
        if train_prompts is not None:
            self.train_prompts = list(train_prompts)
        else:
            self.train_prompts, rows = read_prompt_rows(resolve_path(recipe, recipe.data.train))
        #: extra dataset columns per prompt (e.g. theta_target), handed to the rewards like TRL does
        self.prompt_columns = {p: r for p, r in zip(self.train_prompts, rows) if r}
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, self.cfg.steps, self.cfg.warmup_steps, self.cfg.min_lr_ratio))
        self.merged_weights = MergedWeights()  # generation's merged-adapter buffers, reused every step
        self.start_step = 0
        self.metrics = runs.JsonlWriter(self.output_dir / "metrics.jsonl")
        self.completions_log = runs.JsonlWriter(self.output_dir / "completions.jsonl")
        if resume:
            self._resume()
        if recipe.audit.enabled:  # surrogate rewards checked against their teacher (brainrl/train/audit.py)
            from brainrl.train.audit import audit_rewards

            self.reward_funcs = audit_rewards(recipe, self.reward_funcs, self.output_dir, self.start_step,
                                              write=self.accelerator.is_main_process)
        trainable, total = trainable_parameters(self.policy)
        self.card_extra = {
            "policy": {**self.source, "trainable_parameters": trainable, "total_parameters": total,
                       "lora": recipe.policy.lora.record(),
                       "dropped_generation_defaults": self.dropped_generation_defaults},
            "algorithm": {"name": "awsft", "kl_estimator": "k3 (exp(d)-d-1, d = logp_ref - logp), token mean per "
                          "completion", "reference": "base model with the LoRA adapter disabled",
                          "advantages": "per prompt group, (r - mean) / max(std (unbiased), std_floor)",
                          "loss_temperature": 1.0, "dropout": "off (eval mode) in sampling and update",
                          "generation": recipe.policy.generation.resolve(acc.device)},
            "accelerate": {"num_processes": acc.num_processes, "device": str(acc.device),
                           "distributed_type": str(acc.distributed_type)},
        }

    # -- setup helpers -------------------------------------------------------------------------
    def _check_output_dir(self, resume: bool, overwrite: bool) -> None:
        if resume or not self.output_dir.exists():
            return
        taken = (self.output_dir / "metrics.jsonl").exists() or runs.list_checkpoints(self.output_dir)
        if taken and not overwrite:
            raise ValueError(f"{self.output_dir} already holds a run. Pass --resume to continue it, --overwrite to "
                             "replace it, or --set output_dir=<new folder>.")
        if taken:
            import shutil

            for name in ("metrics.jsonl", "completions.jsonl", "adapter", "eval.json", runs.RUN_CARD):
                target = self.output_dir / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
            for _, path in runs.list_checkpoints(self.output_dir):
                shutil.rmtree(path, ignore_errors=True)

    def _resume(self) -> None:
        checkpoint = runs.latest_checkpoint(self.output_dir)
        if checkpoint is None:
            log.warning("--resume: no checkpoint in %s; starting from step 0", self.output_dir)
            return
        state = runs.load_checkpoint(checkpoint, self.policy, self.optimizer, self.scheduler)
        self.start_step = int(state["step"])
        self.metrics.truncate_after(self.start_step)
        self.completions_log.truncate_after(self.start_step)
        self.accelerator.print(f"resumed from {checkpoint} at step {self.start_step}")

    @property
    def policy(self):
        """The PEFT model without accelerate's wrappers (for generate, disable_adapter, save)."""
        return self.accelerator.unwrap_model(self.model)

    # -- one step --------------------------------------------------------------------------------
    def step_prompts(self, step: int) -> list[str]:
        """This process's prompts for ``step``: a seeded draw that depends only on (seed, step), so a resumed
        run sees the same prompts as an uninterrupted one."""
        acc = self.accelerator
        n = self.cfg.prompts_per_step * acc.num_processes
        rng = np.random.default_rng([self.recipe.seed, step])
        pool = len(self.train_prompts)
        order = np.concatenate([rng.permutation(pool) for _ in range(math.ceil(n / pool))])[:n]
        chosen = [self.train_prompts[i] for i in order]
        return chosen[acc.process_index::acc.num_processes]

    def generation_seed(self, step: int) -> int:
        return (self.recipe.seed * 1_000_003 + step * 7919 + self.accelerator.process_index) % (2**31 - 1)

    def sample(self, step: int) -> Samples:
        """This step's completions, through merged adapter weights (``policy.generation``); on check steps
        (``awsft.logprob_check_every``) with the generation path's own log-probs of the sampled tokens."""
        temperature = self.recipe.sampling.temperature_at(step, self.cfg.steps)
        every = self.cfg.logprob_check_every
        return sample_completions(
            self.policy, self.tokenizer, self.step_prompts(step), self.recipe.sampling,
            num_completions=self.cfg.completions_per_prompt, system=self.recipe.data.system_prompt,
            seed=self.generation_seed(step), temperature=temperature, device=self.accelerator.device,
            generation=self.recipe.policy.generation, merged_weights=self.merged_weights,
            return_logprobs=bool(every) and step % every == 0)

    def update(self, samples: Samples, advantages: torch.Tensor, keep: torch.Tensor) -> dict[str, float]:
        """One optimiser step on mean_i(A_i·CE_i + β·KL_i) over kept completions (chunked if asked)."""
        acc = self.accelerator
        batch = samples.completion_ids.shape[0]
        chunk = self.cfg.update_batch_size or batch
        normaliser = max(float(keep.sum()), 1.0)
        totals = {"loss": 0.0, "ce_weighted": 0.0}
        kl_token_sum, kl_seq_sums, ce_values, drift = 0.0, [], [], None
        self.optimizer.zero_grad(set_to_none=True)
        for start in range(0, batch, chunk):
            rows = slice(start, start + chunk)
            args = (samples.prompt_ids[rows], samples.prompt_mask[rows], samples.completion_ids[rows],
                    samples.completion_mask[rows])
            with torch.no_grad(), self.policy.disable_adapter():
                ref_logp = token_logprobs(completion_logits(self.policy, *args), args[2])
            logp = token_logprobs(completion_logits(self.model, *args), args[2])
            if samples.generation_logprobs is not None:  # sampled by the policy being updated, up to rounding?
                gap = (samples.generation_logprobs[rows] - logp.detach())[args[3].bool()].abs()
                drift = max(drift or 0.0, float(gap.max()) if gap.numel() else 0.0)
            terms = awsft_loss(logp, ref_logp, args[3], advantages[rows].to(logp.device),
                               keep[rows].to(logp.dtype).to(logp.device), self.cfg.beta, normaliser)
            acc.backward(terms.loss)
            kept = keep[rows].to(logp.device)
            totals["loss"] += float(terms.loss.detach())
            kl_token_sum += float(terms.kl_tokens.detach()[kept].sum())
            kl_seq_sums += terms.kl_tokens.detach()[kept].sum(1).tolist()
            ce_values += terms.ce.detach()[kept].tolist()
        if drift is not None and drift > (1e-3 if samples.completion_ids.device.type == "cpu" and
                                          next(self.policy.parameters()).dtype == torch.float32 else 0.1):
            log.warning("step log-probs: the generation path and the update's forward differ by up to %.2e on the "
                        "sampled tokens (policy.generation: %s); the update is off-policy by that much",
                        drift, samples.settings.get("engine"))
        grad_norm = acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.cfg.max_grad_norm)
        skipped = not math.isfinite(float(grad_norm))
        if skipped:  # one NaN step would poison the adapter and every later generation; keep the weights
            log.warning("update skipped: the gradient norm is %s (non-finite), so the adapter was left as it was; "
                        "if this repeats, set policy.generation: {compile: false} and report it", float(grad_norm))
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        kept_tokens = float(samples.completion_mask[keep.to(samples.completion_mask.device)].sum()) or 1.0
        return {
            "loss": totals["loss"],
            "kl_per_token": kl_token_sum / kept_tokens,
            "kl_per_sequence": float(np.mean(kl_seq_sums)) if kl_seq_sums else float("nan"),
            "ce_mean": float(np.mean(ce_values)) if ce_values else float("nan"),
            "grad_norm": float(grad_norm),
            "update_skipped": int(skipped),
            **({"logprob_drift_max": drift} if drift is not None else {}),
        }

    def columns_for(self, prompts: Sequence[str]) -> dict[str, list[Any]] | None:
        """The dataset columns of each completion's prompt (None when the prompt file has none)."""
        if not self.prompt_columns:
            return None
        rows = [self.prompt_columns[p] for p in prompts]
        return {name: [row[name] for row in rows] for name in rows[0]}

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        samples = self.sample(step)
        t1 = time.perf_counter()
        completion_ids = [ids[mask.bool()].tolist() for ids, mask in zip(samples.completion_ids, samples.completion_mask)]
        rewards, per_fn = score_rewards(self.reward_funcs, self.reward_weights, samples.prompts, samples.texts,
                                        completion_ids, self.columns_for(samples.prompts))
        t2 = time.perf_counter()
        group = samples.group.cpu()
        advantages, flat = group_advantages(rewards, group, self.cfg.std_floor)
        keep = ~torch.isnan(rewards)
        lr = self.scheduler.get_last_lr()[0]
        stats = self.update(samples, advantages, keep)
        t3 = time.perf_counter()
        metrics = self._metrics(step, samples, rewards, per_fn, advantages, flat, keep, stats, lr, (t0, t1, t2, t3))
        self._log_completions(step, samples, rewards, per_fn, advantages)
        return metrics

    def _metrics(self, step, samples, rewards, per_fn, advantages, flat, keep, stats, lr, times) -> dict[str, Any]:
        acc = self.accelerator
        t0, t1, t2, t3 = times
        gathered = acc.gather_for_metrics(rewards.to(acc.device)).cpu()
        valid = gathered[~torch.isnan(gathered)]
        metrics: dict[str, Any] = {
            "step": step + 1,
            "reward_mean": float(valid.mean()) if len(valid) else float("nan"),
            "reward_std": float(valid.std()) if len(valid) > 1 else float("nan"),
            "reward_max": float(valid.max()) if len(valid) else float("nan"),
            "rewards_failed": int(torch.isnan(gathered).sum()),
            "frac_groups_flat": float(flat.float().mean()),
            "advantage_abs_mean": float(advantages[keep].abs().mean()) if keep.any() else 0.0,
            **stats,
            "lr": lr,
            "temperature": self.recipe.sampling.temperature_at(step, self.cfg.steps),
            "completion_tokens_mean": float(samples.lengths.float().mean()),
            "completion_words_mean": float(np.mean([len(t.split()) for t in samples.texts])),
            "frac_finished": float(samples.finished.float().mean()),
            "generation_s": t1 - t0, "reward_s": t2 - t1, "update_s": t3 - t2, "step_s": t3 - t0,
        }
        for name, values in per_fn.items():
            arr = np.array([v for v in values if v is not None], dtype=float)
            metrics[f"rewards/{name}/mean"] = float(arr.mean()) if len(arr) else float("nan")
            metrics[f"rewards/{name}/std"] = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
            metrics[f"rewards/{name}/failed"] = sum(v is None for v in values)
        total = max(t3 - t0, 1e-9)
        metrics.update({"share_generation": (t1 - t0) / total, "share_reward": (t2 - t1) / total,
                        "share_update": (t3 - t2) / total})
        return metrics

    def _log_completions(self, step, samples, rewards, per_fn, advantages) -> None:
        limit = self.recipe.logging.completions_per_step
        if limit == 0 or not self.accelerator.is_main_process:
            return
        rows = range(len(samples.texts)) if limit < 0 else range(min(limit, len(samples.texts)))
        for i in rows:
            self.completions_log.write({
                "step": step + 1, "prompt": samples.prompts[i], "completion": samples.texts[i],
                "reward": None if math.isnan(float(rewards[i])) else float(rewards[i]),
                "rewards": {k: v[i] for k, v in per_fn.items()}, "advantage": float(advantages[i]),
                "tokens": int(samples.lengths[i]), "finished": bool(samples.finished[i]),
            })

    # -- the loop -----------------------------------------------------------------------------------
    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Run to ``awsft.steps`` (or stop after step ``stop_at`` as if interrupted: no final save)."""
        acc = self.accelerator
        recipe = self.recipe
        if acc.is_main_process:
            runs.write_run_card(self.output_dir, recipe, self.reward_funcs, self.reward_weights,
                                {**self.card_extra, "status": "running", "start_step": self.start_step})
        tracking = bool(runs.available_trackers(recipe.logging.report_to))
        if tracking:
            acc.init_trackers(recipe.logging.project, config=runs.flat_hparams(recipe.to_dict()))
        progress = None
        if recipe.logging.progress and acc.is_local_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=self.cfg.steps, initial=self.start_step, desc=f"awsft {recipe.name}", unit="step")
        last: dict[str, Any] = {}
        summary_extra: dict[str, Any] = {}
        started = time.perf_counter()
        for step in range(self.start_step, self.cfg.steps):
            if stop_at is not None and step >= stop_at:
                break
            try:
                last = self.train_step(step)
            except AuditStop as stop:  # the surrogate left its teacher and the recipe says stop
                acc.print(f"stopped at step {step}: {stop}")
                summary_extra = {"stopped_by_audit": str(stop), "steps_done": step}
                break
            if acc.is_main_process:
                self.metrics.write(last)
                if tracking and (step + 1) % recipe.logging.log_every == 0:
                    acc.log({k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "step"}, step=step + 1)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(reward=f"{last['reward_mean']:.4f}", kl=f"{last['kl_per_token']:.4f}",
                                     s=f"{last['step_s']:.1f}")
            if self.cfg.checkpoint_every and (step + 1) % self.cfg.checkpoint_every == 0 and step + 1 < self.cfg.steps:
                self.save_checkpoint(step + 1)
        if progress is not None:
            progress.close()
        acc.wait_for_everyone()
        summary = {"steps": self.cfg.steps, "train_seconds": time.perf_counter() - started, "last": last, **summary_extra}
        if stop_at is not None and stop_at < self.cfg.steps:
            summary = {**summary, "stopped_at": stop_at}
        else:
            self.save_checkpoint(self.cfg.steps)  # all ranks (it synchronises them)
            if acc.is_main_process:
                self.policy.save_pretrained(self.output_dir / "adapter")
                self.tokenizer.save_pretrained(self.output_dir / "adapter")
                runs.update_run_card(self.output_dir, status="finished", summary=summary)
                runs.write_model_card(self.output_dir / "adapter", self.output_dir)
        # last: accelerate's end_training also destroys the process group, so no barrier may follow it
        if tracking:
            acc.end_training()
        return summary

    def save_checkpoint(self, step: int) -> None:
        if self.accelerator.is_main_process:
            runs.save_checkpoint(self.output_dir, step, self.policy, self.optimizer, self.scheduler,
                                 {"seed": self.recipe.seed}, keep=self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()
