"""Audited training on a surrogate reward: check the student against its teacher while the policy drifts.

A surrogate is only trustworthy on the texts it was distilled on; as the policy moves, its completions
leave that distribution, and a policy that finds where the student is wrong is hacking the reward. So
every ``audit.every`` reward calls (training steps), ``audit.groups`` prompt groups of the batch are also
scored by the teacher, and the run logs, in ``audit.jsonl``, the student–teacher agreement: Pearson r over
the audited items of the last ``window`` audits and the share of concordant within-group pairs (what the
group-normalised advantages compare). When agreement falls below ``min_r`` or ``min_rank``:

- ``on_drift: refit``: refit the student on its training pairs plus every audited (text, teacher map) pair
  since the last refit (earlier ones are already among its training pairs, each counted once; saved to
  ``surrogate-refit-N/`` with its card), and re-score the batch with it; after
  ``max_refits`` refits, fall back to the teacher;
- ``on_drift: teacher``: score everything with the teacher from now on;
- ``on_drift: stop``: end the run (``AuditStop``), keeping what it learnt so far.

Audited groups are trained on the teacher's values (``use_teacher_on_audited``): they were computed anyway.
The recipe's held-out evaluation always uses the teacher (``brainrl.brain.surrogate.teacher_config``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.rewards.base import BrainReward, Reward

log = logging.getLogger(__name__)

ON_DRIFT = ("refit", "teacher", "stop")
AUDIT_LOG = "audit.jsonl"
REFIT_DIR = "surrogate-refit-{n:02d}"


@dataclass
class AuditConfig:
    """The ``audit:`` section of a recipe (used when the recipe's brain model is a surrogate)."""

    enabled: bool = False
    #: audit every k-th reward call (AWSFT: every k steps), the first call included
    every: int = 2
    #: prompt groups per audit scored by the teacher (all completions of each group)
    groups: int = 1
    #: agreement floor: Pearson r of student vs teacher rewards over the pooled audits
    min_r: float = 0.8
    #: agreement floor: share of concordant within-group pairs over the pooled audits
    min_rank: float = 0.75
    #: audits pooled for the decision (reset by a refit)
    window: int = 3
    #: pooled audited items needed before agreement may trigger an action: r and concordance of a single
    #: prompt group (a few completions of one prompt, little spread) are too noisy to act on
    min_items: int = 12
    on_drift: str = "refit"
    max_refits: int = 4
    #: weight of each audited pair against each original training pair in a refit
    refit_weight: float = 4.0
    use_teacher_on_audited: bool = True
    #: the teacher's PipelineConfig fields; empty = the teacher recorded in the student's card
    teacher: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_drift not in ON_DRIFT:
            raise ValueError(f"audit.on_drift must be one of {', '.join(ON_DRIFT)}; got {self.on_drift!r}.")
        if self.every < 1 or self.groups < 1 or self.window < 1 or self.max_refits < 0 or self.min_items < 3:
            raise ValueError("audit.every, audit.groups and audit.window must be >= 1, audit.max_refits >= 0, "
                             "audit.min_items >= 3.")
        if not (-1.0 <= self.min_r <= 1.0 and 0.0 <= self.min_rank <= 1.0) or self.refit_weight <= 0:
            raise ValueError("audit.min_r must lie in [-1, 1], audit.min_rank in [0, 1], audit.refit_weight > 0.")


class AuditStop(RuntimeError):
    """Raised by an audited reward whose student drifted from its teacher under ``on_drift: stop``."""


class AuditedReward(Reward):
    """A surrogate reward checked against its teacher twin (see the module docstring)."""

    def __init__(self, student: Reward, teacher: Reward, config: AuditConfig, log_path: Path | None,
                 refit_dir: Path | None, seed: int = 0, start_call: int = 0, surrogate=None):
        super().__init__(student.__name__)
        self.student, self.teacher, self.config = student, teacher, config
        self.log_path, self.refit_dir, self.seed = log_path, refit_dir, seed
        self.calls = start_call
        self.mode = "student"
        self.refits = 0
        self.window: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (student, teacher, group) per audit
        self.fresh_texts: list[str] = []  # audited completions, refit material
        self._surrogate = surrogate  # the SurrogateBrainModel to refit (None: found through the reward)
        self.last_audit: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {**self.student.describe(), "audited": True, "teacher": self.teacher.describe(),
                "audit": vars(self.config)}

    # -- the reward -----------------------------------------------------------------------------------
    def __call__(self, prompts=None, completions: Sequence[Any] = (), **columns: Any) -> list[float | None]:
        call = self.calls
        self.calls += 1
        if self.mode == "teacher":
            return self._relay(self.teacher, prompts, completions, columns)
        values = self._relay(self.student, prompts, completions, columns)
        if call % self.config.every == 0 and len(completions):
            values = self._audit(call, prompts, completions, columns, values)
        return values

    def _relay(self, reward: Reward, prompts, completions, columns) -> list[float | None]:
        values = list(reward(prompts, completions, **columns))
        self.last_failures = dict(reward.last_failures)
        return values

    # -- one audit ------------------------------------------------------------------------------------
    def _audit(self, call: int, prompts, completions, columns, values: list[float | None]) -> list[float | None]:
        cfg = self.config
        n = len(completions)
        by_prompt = prompts is not None and len(prompts) == n
        group_of = [str(p) for p in prompts] if by_prompt else [str(i) for i in range(n)]
        keys = list(dict.fromkeys(group_of))
        rng = np.random.default_rng([self.seed, call, 0xA0D17])
        chosen = set(rng.choice(len(keys), size=min(cfg.groups, len(keys)), replace=False).tolist())
        items = [i for i, g in enumerate(group_of) if keys.index(g) in chosen]
        sub_prompts = [prompts[i] for i in items] if prompts is not None else None
        sub_completions = [completions[i] for i in items]
        sub_columns = {k: [v[i] for i in items] if isinstance(v, (list, tuple)) and len(v) == n else v
                       for k, v in columns.items()}
        started = time.perf_counter()
        teacher_values = list(self.teacher(sub_prompts, sub_completions, **sub_columns))
        teacher_s = time.perf_counter() - started
        self._collect_pairs(sub_completions)
        pairs = [(values[i], t, group_of[i]) for i, t in zip(items, teacher_values)
                 if values[i] is not None and t is not None]
        if pairs:
            s, t, g = (np.array(x) for x in zip(*pairs))
            self.window = (self.window + [(s.astype(float), t.astype(float), g)])[-cfg.window:]
        row = {"step": call + 1, "mode": self.mode, "audited_items": len(items), "audited_groups": len(chosen),
               "teacher_s": teacher_s, **self._agreement(pairs), "refits": self.refits}
        action = "none"
        if row["pooled_items"] >= cfg.min_items and self._drifted(row):
            action = self._on_drift(row)
            if action in ("refit", "teacher"):
                values = self._relay(self.student if self.mode == "student" else self.teacher, prompts, completions,
                                     columns)
        if cfg.use_teacher_on_audited and self.mode == "student":
            for i, t in zip(items, teacher_values):
                if t is not None:
                    values[i] = t
        row["action"] = action
        row["mode_after"] = self.mode
        self.last_audit = row
        self._write(row)
        if action == "stop":
            raise AuditStop(f"surrogate reward {self.__name__} disagrees with its teacher at step {call + 1} "
                            f"(pooled r {row['pooled_r']:.3f}, concordant pairs {row['pooled_concordant']:.2f})")
        return values

    def _agreement(self, pairs) -> dict[str, Any]:
        from brainrl.brain.distill import pearson, rank_agreement

        out: dict[str, Any] = {}
        if pairs:
            s, t, g = (np.array(x) for x in zip(*pairs))
            s, t = s.astype(float), t.astype(float)
            out.update({"r": pearson(s, t), "concordant": rank_agreement(s, t, g)["concordant_pairs"],
                        "student_mean": float(np.mean(s)), "teacher_mean": float(np.mean(t)),
                        "mean_abs_error": float(np.mean(np.abs(s - t)))})
        if self.window:
            s = np.concatenate([w[0] for w in self.window])
            t = np.concatenate([w[1] for w in self.window])
            g = np.concatenate([np.array([f"{k}:{x}" for x in w[2]]) for k, w in enumerate(self.window)])
            pooled = rank_agreement(s, t, g)
            out.update({"pooled_items": int(len(s)), "pooled_r": pearson(s, t),
                        "pooled_concordant": pooled["concordant_pairs"]})
        else:
            out.update({"pooled_items": 0, "pooled_r": math.nan, "pooled_concordant": math.nan})
        return out

    def _drifted(self, row: dict[str, Any]) -> bool:
        r, conc = row["pooled_r"], row["pooled_concordant"]
        low_r = math.isfinite(r) and r < self.config.min_r
        low_rank = math.isfinite(conc) and conc < self.config.min_rank
        return low_r or low_rank

    def _on_drift(self, row: dict[str, Any]) -> str:
        cfg = self.config
        if cfg.on_drift == "stop":
            return "stop"
        if (cfg.on_drift == "teacher" or self.refits >= cfg.max_refits or not self.fresh_texts
                or self._teacher_brain() is None):
            self.mode = "teacher"
            log.warning("audit: %s falls back to the teacher at step %d", self.__name__, row["step"])
            return "teacher"
        self._refit(row["step"])
        return "refit"

    # -- refitting ------------------------------------------------------------------------------------
    def _collect_pairs(self, completions) -> None:
        """Keep the audited texts; their teacher maps are fetched only when a refit needs them (the teacher
        pipeline would otherwise synthesise their speech a second time on every audit)."""
        from brainrl.rewards.base import completion_text

        for completion in completions:
            try:
                self.fresh_texts.append(completion_text(completion))
            except TypeError:
                continue

    def _teacher_brain(self) -> BrainReward | None:
        parts = getattr(self.teacher, "parts", None) or [self.teacher]
        return next((p for p in parts if isinstance(p, BrainReward)), None)

    def surrogate(self):
        if self._surrogate is None:
            parts = getattr(self.student, "parts", None) or [self.student]
            brain = next(p for p in parts if isinstance(p, BrainReward))
            self._surrogate = brain.pipeline.model
        return self._surrogate

    def _refit(self, step: int) -> None:
        from brainrl.brain.distill import refit_student, teacher_maps

        model = self.surrogate()
        fresh = teacher_maps(self.fresh_texts, self._teacher_brain().pipeline)  # memory-cached maps where still held
        student = refit_student(model.student, fresh.texts, fresh.maps, self.config.refit_weight)
        student.card["refit"].update({"step": step, "reward": self.__name__})
        folder = (self.refit_dir or Path(model.path)) / REFIT_DIR.format(n=self.refits + 1)
        student.save(folder)
        model.replace_student(student)
        self.refits += 1
        self.window = []  # agreement of the old student says nothing about the new one
        log.info("audit: refitted the surrogate on %d fresh pairs at step %d -> %s", len(self.fresh_texts), step,
                 folder)
        self.fresh_texts = []  # now in the student's training pairs: a later refit adds only newer ones

    def _write(self, row: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        from brainrl.train.records import JsonlWriter

        JsonlWriter(self.log_path).write({"reward": self.__name__, **row})


def audit_rewards(recipe, funcs: Sequence[Callable], output_dir: Path, start_step: int = 0,
                  write: bool = True) -> list[Callable]:
    """The recipe's reward callables with every surrogate brain reward wrapped in an ``AuditedReward``
    (its teacher twin bound to the teacher pipeline). Needs ``brain.model: surrogate``."""
    from brainrl.brain.pipeline import PipelineConfig
    from brainrl.brain.surrogate import teacher_config

    cfg: AuditConfig = recipe.audit
    if recipe.brain.model != "surrogate":
        raise ValueError("audit.enabled needs a surrogate brain model (brain.model: surrogate); the recipe's is "
                         f"{recipe.brain.model!r}. Turn the audit off or distil a student (brainrl distill).")
    teacher = PipelineConfig(**cfg.teacher) if cfg.teacher else teacher_config(recipe.brain)
    output_dir = Path(output_dir)
    log_path = output_dir / AUDIT_LOG if write else None
    if log_path is not None and start_step > 0:
        from brainrl.train.records import JsonlWriter

        JsonlWriter(log_path).truncate_after(start_step)
    elif log_path is not None and log_path.exists():
        log_path.unlink()
    out = []
    for fn in funcs:
        if isinstance(fn, Reward) and fn.bind(teacher) is not fn:
            out.append(AuditedReward(fn, fn.bind(teacher), cfg, log_path, output_dir, seed=recipe.seed,
                                     start_call=start_step))
        else:
            out.append(fn)
    if start_step > 0:
        _restore_refits(out, output_dir, start_step)
    return out


def _restore_refits(funcs: Sequence[Callable], output_dir: Path, start_step: int) -> None:
    """A resumed run continues with the newest student its audit refitted before ``start_step``."""
    import json

    from brainrl.brain.surrogate import CARD_FILE, Student

    for fn in funcs:
        if not isinstance(fn, AuditedReward):
            continue
        done = []
        for folder in sorted(output_dir.glob(REFIT_DIR.replace("{n:02d}", "*"))):
            card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
            if card.get("refit", {}).get("reward") == fn.__name__ and card["refit"].get("step", 1 << 30) <= start_step:
                done.append(folder)
        if done:
            model = fn.surrogate()
            model.replace_student(Student.load(done[-1]))
            fn.refits = model.refits = len(done)
            log.info("audit: resumed with the refitted student %s", done[-1])
