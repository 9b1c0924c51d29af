"""θ-target reward: a generator asked for θ* is rewarded when its output's brain map decodes to θ*.

reward = −E_q[‖w ⊙ (θ − θ*)‖²] over posterior draws θ ~ q(θ | map)   (``mode="expected"``; charges spread)
       = −‖w ⊙ (E_q[θ] − θ*)‖²                                        (``mode="mean"``)

over the chosen dimensions (default all six) with weights w (default 1). Every item also gets an
out-of-distribution score (``brainrl.sbi.inference.ood``): its map's learned summary against the posterior's
training summaries. ``ood`` says what a flagged item gets:

- ``"log"``: its reward unchanged (the score is logged and kept in ``last_ood``);
- ``"downweight"``: ``r_min + factor · (r − r_min)``, where r_min = −Σ w² is the worst possible reward
  (θ, θ* ∈ [0, 1]). Multiplying a negative reward by a factor < 1 would *raise* it and so reward
  drifting away from the simulator; shrinking its margin above the worst value lowers it instead;
- ``"none"``: ``None`` (dropped from the loss, like any failed item);
- ``"off"``: no OOD scoring at all (no statistics needed).

θ* and the topic come as dataset columns (``theta_target``: six floats in [0, 1]; ``topic``; both
trainers pass the columns of a ``.jsonl`` prompt file); as fallbacks, from θ-prompt JSONL files given as
``prompts=`` (looked up by prompt), else parsed from the prompt text's ``- valence: 0.64 (high)`` lines.

The reward decodes what the posterior saw: a completion is cleaned into the campaigns' spoken format
(``text_format="campaign"``: one headline per line, numbering stripped, each closed by a full stop, as
``parse.block_text``), and its speech + brain pipeline must be the one of the posterior's training
campaign(s) (speech engine and brain model identity, from the posterior's card); a different one is
refused with a message naming both. Without a ``brain:`` section the campaign's pipeline is used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import BrainMap, Failed
from brainrl.brain.pipeline import PipelineConfig
from brainrl.rewards.base import BrainReward

log = logging.getLogger(__name__)

MODES = ("expected", "mean")
OOD_ACTIONS = ("log", "downweight", "none", "off")
TEXT_FORMATS = ("campaign", "raw")


class PipelineMismatch(ValueError):
    """The reward's speech + brain pipeline is not the one the posterior's campaign used."""


def _same_identity(recorded: dict[str, Any], current: dict[str, Any]) -> bool:
    """Speech and model descriptions agree on every field both record (newer code may record more, e.g.
    speech caps), and neither is missing."""
    for part in ("speech", "model"):
        a, b = recorded.get(part), current.get(part)
        if not isinstance(a, dict) or not isinstance(b, dict):
            if a != b:
                return False
            continue
        shared = set(a) & set(b)
        if not shared or any(a[k] != b[k] for k in shared):
            return False
    return True


def check_pipeline(posterior_meta: dict[str, Any], described: dict[str, Any], what: str = "the reward") -> None:
    """Raise ``PipelineMismatch`` when ``described`` (``BrainPipeline.describe()``) differs from every
    training campaign's pipeline in the posterior's card (speech engine, brain model identity)."""
    import json

    from brainrl.sbi.inference.decode import pipeline_identity

    campaigns = posterior_meta.get("campaigns") or []
    wanted = [pipeline_identity(c.get("pipeline")) for c in campaigns if c.get("pipeline")]
    if not wanted:
        log.warning("the posterior's card records no campaign pipeline; %s cannot check that it decodes what the "
                    "posterior was trained on", what)
        return
    mine = json.loads(json.dumps(pipeline_identity(described), default=str))
    if any(_same_identity(json.loads(json.dumps(w, default=str)), mine) for w in wanted):
        return
    raise PipelineMismatch(
        f"{what} speaks and predicts with {mine}, but the posterior was trained on maps from {wanted[0]}; its decodes "
        "of these maps would be meaningless. Use the campaign's pipeline (omit the recipe's brain: section, or copy "
        "the campaign recipe's pipeline settings into it), or fit a posterior on a campaign made with this pipeline.")


def theta_distance(draws: np.ndarray, targets: np.ndarray, weights: np.ndarray, mode: str) -> np.ndarray:
    """(n,) squared weighted distances: draws (n, S, d), targets (n, d), weights (d,)."""
    draws, targets = np.asarray(draws, np.float64), np.asarray(targets, np.float64)
    w2 = np.asarray(weights, np.float64) ** 2
    if mode == "expected":
        return np.mean(np.sum(w2 * (draws - targets[:, None, :]) ** 2, axis=-1), axis=1)
    if mode == "mean":
        return np.sum(w2 * (draws.mean(axis=1) - targets) ** 2, axis=-1)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")


class ThetaTargetReward(BrainReward):
    """−(weighted squared distance between decoded θ and the requested θ*), batched over all items.

    ``posterior`` is a posterior folder (``brainrl sbi fit --out``) or a loaded ``Posterior``-like object
    (``sample(inputs, n, seed)``, ``summaries(inputs)``, ``param_names``); a folder is loaded lazily in
    each process and never pickled. ``prompts``: θ-prompt JSONL file(s) used when no ``theta_target``
    column arrives. ``seed`` fixes the posterior draws, so a text always gets the same reward.
    """

    def __init__(self, posterior: Any, dims: Sequence[str] | None = None, weights: Sequence[float] | None = None,
                 mode: str = "expected", n_samples: int = 64, ood: str = "log", ood_threshold: float = 0.05,
                 name: str | None = None, pipeline: PipelineConfig | None = None,
                 prompts: str | Path | Sequence[str | Path] | None = None, seed: int = 0,
                 sampler: dict[str, Any] | None = None, text_format: str = "campaign"):
        from brainrl.sbi.simulation.prior import PARAM_NAMES

        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}.")
        if ood not in OOD_ACTIONS:
            raise ValueError(f"unknown ood action {ood!r}; choose one of {', '.join(OOD_ACTIONS)}.")
        if not 0.0 < float(ood_threshold) < 1.0:
            raise ValueError(f"ood_threshold is a p-value threshold in (0, 1); got {ood_threshold}.")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1; got {n_samples}.")
        if text_format not in TEXT_FORMATS:
            raise ValueError(f"unknown text_format {text_format!r}; choose one of {', '.join(TEXT_FORMATS)}.")
        self.text_format = text_format
        self._pipeline_checked = False
        dims = tuple(dims) if dims else tuple(PARAM_NAMES)
        unknown = [d for d in dims if d not in PARAM_NAMES]
        if unknown or len(set(dims)) != len(dims):
            raise ValueError(f"dims must be distinct names among {', '.join(PARAM_NAMES)}; got {list(dims)}.")
        weights = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
        if len(weights) != len(dims) or any(not np.isfinite(w) or w < 0 for w in weights) or not any(weights):
            raise ValueError(f"weights must be {len(dims)} non-negative numbers (one per dim in {list(dims)}), "
                             f"not all zero; got {weights}.")
        self.dims, self.weights = dims, np.asarray(weights, np.float64)
        self.dim_index = np.array([PARAM_NAMES.index(d) for d in dims])
        self.mode, self.n_samples, self.seed = mode, int(n_samples), int(seed)
        self.ood, self.ood_threshold = ood, float(ood_threshold)
        self.sampler = dict(sampler or {})
        if isinstance(posterior, (str, Path)):
            self.posterior_dir: str | None = str(posterior)
            self._posterior = None
        else:
            self.posterior_dir, self._posterior = None, posterior
        if isinstance(prompts, (str, Path)):
            prompts = [prompts]
        self.prompt_files = [str(p) for p in prompts] if prompts else []
        self._prompt_table: dict[str, dict[str, Any]] | None = None
        self._ood_reference = None
        self.last_ood: list[dict[str, Any] | None] = []
        default = "theta_target" + ("" if len(dims) == len(PARAM_NAMES) else "_" + "_".join(d[:3] for d in dims))
        super().__init__(name or default, pipeline)

    # -- lazily loaded, per process ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        if self.posterior_dir is not None:  # a loaded folder is reloaded; an injected object travels
            state["_posterior"] = None
            state["_ood_reference"] = None
        state["_prompt_table"] = None
        state["_pipeline_checked"] = False
        return state

    def bind(self, pipeline):
        bound = super().bind(pipeline)
        bound._pipeline_checked = False
        return bound

    @property
    def pipeline(self):
        """The recipe's pipeline, or without one the posterior's training campaign's (from its card)."""
        if self._pipeline is None:
            from brainrl.brain.pipeline import BrainPipeline

            config = self.pipeline_config
            if config is None and (getattr(self.posterior, "meta", None) or {}).get("campaigns"):
                from brainrl.sbi.inference.decode import posterior_pipeline

                config = posterior_pipeline(self.posterior.meta)
            self._pipeline = BrainPipeline.shared(config)
        return self._pipeline

    def check_pipeline(self) -> None:
        """Refuse (``PipelineMismatch``) a pipeline that differs from the posterior's campaign's; once."""
        if self._pipeline_checked:
            return
        meta = getattr(self.posterior, "meta", None) or {}
        describe = getattr(self.pipeline, "describe", None)
        if meta.get("campaigns") and callable(describe):
            check_pipeline(meta, describe(), f"reward {self.__name__}")
        self._pipeline_checked = True

    def maps(self, completions: Sequence[Any]) -> list[BrainMap | Failed]:
        """Brain maps of the completions as the campaign spoke its texts (``text_format``)."""
        if self.text_format == "raw":
            return super().maps(completions)
        from brainrl.rewards.base import completion_text
        from brainrl.sbi.inference.decode import campaign_text

        texts: list[str | None] = []
        bad: dict[int, str] = {}
        for i, completion in enumerate(completions):
            try:
                texts.append(campaign_text(completion_text(completion)))
            except TypeError as err:
                bad[i] = str(err)
                texts.append(None)
            if texts[-1] is None and i not in bad:
                bad[i] = "the completion holds no headline text after cleaning (campaign format)"
        keep = [i for i, t in enumerate(texts) if t is not None]
        predictions = self.pipeline([texts[i] for i in keep]) if keep else []
        out: list[BrainMap | Failed] = [Failed(bad.get(i, "not scored")) for i in range(len(texts))]
        for i, p in zip(keep, predictions):
            out[i] = p
        return out

    @property
    def posterior(self):
        if self._posterior is None:
            from brainrl.sbi.inference.estimator import Posterior

            self._posterior = Posterior.load(self.posterior_dir)
        return self._posterior

    @property
    def ood_reference(self):
        if self._ood_reference is None:
            from brainrl.sbi.inference.ood import OODReference

            stored = getattr(self.posterior, "ood_reference", None)
            if stored is not None:  # an injected posterior object may carry its statistics
                self._ood_reference = stored
            elif self.posterior_dir is None:
                raise ValueError("ood is on but the injected posterior has no `ood_reference`; pass a posterior "
                                 "folder with ood.npz, set `ood_reference`, or use ood='off'.")
            else:
                self._ood_reference = OODReference.load(self.posterior_dir)
        return self._ood_reference

    def prompt_table(self) -> dict[str, dict[str, Any]]:
        if self._prompt_table is None:
            from brainrl.sbi.theta.prompts import prompt_table, read_theta_prompts

            rows = [row for path in self.prompt_files for row in read_theta_prompts(path)]
            self._prompt_table = prompt_table(rows)
        return self._prompt_table

    # -- targets -------------------------------------------------------------------------------------
    def targets(self, prompts: Sequence[Any] | None, n: int, columns: dict[str, Any]) -> np.ndarray:
        """(n, 6) θ* per item, from the ``theta_target`` column or the prompt lookup table."""
        from brainrl.sbi.theta.prompts import THETA_COLUMN, check_theta, prompt_key

        values = columns.get(THETA_COLUMN)
        if values is not None:
            if len(values) != n:
                raise ValueError(f"column {THETA_COLUMN!r} has {len(values)} entries for {n} completions; "
                                 "it needs one per completion.")
            return np.stack([check_theta(v, f"{THETA_COLUMN}[{i}]") for i, v in enumerate(values)])
        if not self.prompt_files and prompts is not None and len(prompts) == n:
            from brainrl.sbi.simulation.procedural import parse_request

            try:  # the θ prompt itself states θ* ("- valence: 0.64 (high)"), to two decimals
                return np.stack([parse_request(prompt_key(p))[0] for p in prompts])
            except ValueError as err:
                raise ValueError(f"reward {self.__name__}: no {THETA_COLUMN!r} column and the prompts state no θ* "
                                 f"({err}). Give the prompt dataset a {THETA_COLUMN!r} column (a .jsonl prompt file "
                                 "from `brainrl theta-prompts`) or pass prompts=<θ-prompt JSONL>.") from err
        if not self.prompt_files:
            raise ValueError(f"reward {self.__name__}: no {THETA_COLUMN!r} column. Give the prompt dataset a "
                             f"{THETA_COLUMN!r} column (six floats in [0, 1] per prompt) or pass prompts=<θ-prompt "
                             "JSONL> so targets are looked up by prompt (`brainrl theta-prompts` writes one).")
        if prompts is None or len(prompts) != n:
            raise ValueError(f"reward {self.__name__}: no {THETA_COLUMN!r} column and {0 if prompts is None else len(prompts)} "
                             f"prompts for {n} completions; the θ* lookup needs one prompt per completion.")
        table = self.prompt_table()
        out = []
        for prompt in prompts:
            row = table.get(prompt_key(prompt))
            if row is None:
                raise ValueError(f"reward {self.__name__}: prompt {prompt_key(prompt)[:70]!r}… is in none of "
                                 f"{self.prompt_files}; no {THETA_COLUMN!r} for it.")
            out.append(check_theta(row[THETA_COLUMN]))
        return np.stack(out)

    # -- scoring ---------------------------------------------------------------------------------------
    @property
    def worst(self) -> float:
        """The lowest possible reward, −Σ w² (every dimension off by 1)."""
        return -float(np.sum(self.weights ** 2))

    def score_draws(self, draws: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Rewards from posterior draws (n, S, 6) and targets (n, 6), over the chosen dims."""
        return -theta_distance(draws[..., self.dim_index], targets[:, self.dim_index], self.weights, self.mode)

    def apply_ood(self, value: float, record: dict[str, Any]) -> float | None:
        """The OOD action on one item's reward: unchanged unless flagged; then ``None`` (``ood="none"``), pulled
        toward the worst reward by the score's factor (``"downweight"``), or unchanged (``"log"``)."""
        if not record["flagged"] or self.ood in ("log", "off"):
            return value
        if self.ood == "none":
            return None
        return self.worst + record["factor"] * (value - self.worst)

    def decode(self, maps: Sequence[BrainMap], with_ood: bool = True) -> tuple[np.ndarray, Any]:
        """Posterior draws (n, S, 6) and OOD scores (or None) for a batch of maps, in one call each."""
        posterior = self.posterior
        inputs = posterior.prepare(list(maps)) if hasattr(posterior, "prepare") else list(maps)
        draws = np.asarray(posterior.sample(inputs, self.n_samples, seed=self.seed, **self.sampler))
        scores = None
        if with_ood and self.ood != "off":
            scores = self.ood_reference.score(posterior.summaries(inputs), self.ood_threshold)
        return draws, scores

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                 ) -> list[float | None]:
        self.last_failures = {}
        n = len(completions)
        targets = self.targets(prompts, n, columns)  # configuration errors raise before any work
        self.check_pipeline()
        predictions = self.maps(completions)
        rewards: list[float | None] = [None] * n
        self.last_ood = [None] * n
        good = []
        for i, prediction in enumerate(predictions):
            if isinstance(prediction, BrainMap):
                good.append(i)
            else:
                self._fail(i, prediction.reason if isinstance(prediction, Failed) else f"no map: {prediction!r}")
        if not good:
            return rewards
        try:
            draws, scores = self.decode([predictions[i] for i in good])
            values = self.score_draws(draws, targets[good])
        except Exception as err:  # the posterior failed on the batch: every item is None with the reason
            for i in good:
                self._fail(i, f"posterior decoding failed: {type(err).__name__}: {err}")
            return rewards
        for j, i in enumerate(good):
            value = float(values[j])
            if scores is not None:
                record = scores.record(j)
                self.last_ood[i] = record
                if record["flagged"]:
                    log.warning("reward %s: item %d is out of distribution (distance %.2f, p = %.3g; action %s)",
                                self.__name__, i, record["distance"], record["p_value"], self.ood)
                value = self.apply_ood(value, record)
                if value is None:
                    self._fail(i, f"out of distribution (p = {record['p_value']:.3g} < {self.ood_threshold})")
                    continue
            if not np.isfinite(value):
                self._fail(i, "reward is not finite")
                continue
            rewards[i] = value
        return rewards

    def score_map(self, brain_map: BrainMap, index: int, columns: dict[str, Any]) -> float:
        """One map's reward, without the OOD action; ``columns`` hold ``theta_target`` with an entry at ``index``."""
        from brainrl.sbi.theta.prompts import THETA_COLUMN

        values = columns.get(THETA_COLUMN)
        target = self.targets(None, 0 if values is None else len(values), columns)[index]
        draws, _ = self.decode([brain_map], with_ood=False)
        return float(self.score_draws(draws, target[None])[0])

    def describe(self) -> dict[str, Any]:
        meta = getattr(self._posterior, "meta", None) or {}
        return {**super().describe(), "posterior": self.posterior_dir, "dims": list(self.dims),
                "weights": self.weights.tolist(), "mode": self.mode, "n_samples": self.n_samples, "seed": self.seed,
                "ood": self.ood, "ood_threshold": self.ood_threshold, "prompt_files": self.prompt_files,
                "text_format": self.text_format,
                "posterior_data": meta.get("data"),
                "pipeline": None if self.pipeline_config is None else vars(self.pipeline_config)}
