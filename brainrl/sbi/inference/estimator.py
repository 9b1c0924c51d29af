"""The BayesFlow posterior q(θ | brain sequence) of sbi-paper.md, its fit, save/load and use.

The fixed standardise-then-PCA projection runs before the network (``brainrl.sbi.simulation.projection``), so
the trainable summary starts from k-dim frames; a ``Posterior`` carries the same projection and
accepts raw ``BrainMap``s, raw (T, 20,484) arrays or already-projected (coeffs, mask) pairs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import content_hash, versions
from brainrl.sbi.simulation.prior import PARAM_NAMES, item_rng
from brainrl.sbi.simulation.projection import Projection

log = logging.getLogger(__name__)

APPROXIMATOR_FILE = "approximator.keras"
META_FILE = "posterior.json"
SCALING_FILE = "input_scaling.npz"
MAX_SAMPLE_ROWS = 4096  # cases x draws per approximator.sample call (memory bound)
THETA_EPS = 1e-6  # keeps θ off the [0, 1] bounds, where the logit constraint is infinite
SBI_PACKAGES = ("brainrl", "numpy", "torch", "keras", "bayesflow", "datasets")


class _QuietBayesflow(logging.Filter):
    """bayesflow forces its logger to INFO on import and warns that it turned autograd off;
    ``import_bayesflow`` turns autograd back on, so that warning (a dozen lines on every ``brainrl sbi`` or
    ``validate`` run) and the INFO lines tell a user nothing to act on. Shown again under --verbose (DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().level <= logging.DEBUG:
            return True
        return record.levelno >= logging.WARNING and "disable autograd" not in record.getMessage()


def import_bayesflow():
    """``import bayesflow`` with the torch backend, undoing its process-wide ``set_grad_enabled(False)``."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import torch

    bf_log = logging.getLogger("bayesflow")
    if not any(isinstance(f, _QuietBayesflow) for f in bf_log.filters):
        bf_log.addFilter(_QuietBayesflow())

    import bayesflow as bf

    import brainrl.sbi.inference.networks  # noqa: F401  (registers FrameMLPSummary for keras deserialisation)

    torch.set_grad_enabled(True)  # bayesflow turned it off on import
    return bf


@dataclass
class EstimatorConfig:
    """Network and training settings; defaults are the paper's (Appendix B)."""

    hidden: int = 128
    summary_dim: int = 128
    dropout: float = 0.1
    flow_widths: list[int] = field(default_factory=lambda: [128, 128])
    time_embedding_dim: int = 8
    flow_dropout: float = 0.05
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 70
    early_stopping_patience: int = 10
    lr_patience: int = 4
    lr_factor: float = 0.5
    min_lr: float = 1e-6
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    #: z-score every summary input (PCA coefficient) with its mean and SD over the training items' valid
    #: frames. Raw PCA coefficients differ in scale by 40-100x (PC1 vs PC20-PC32 on synthetic maps), so
    #: without it the frame LayerNorm sees the low-variance directions that carry θ shrunk to noise.
    standardize_inputs: bool = True
    #: the training budget counts optimiser steps, not epochs: a small campaign's epoch is padded to
    #: ``min_steps_per_epoch`` steps (the training set repeated, reshuffled), and early stopping may not
    #: stop before ``min_steps`` steps. The paper's 10k-item schedule (313 steps per epoch) is unchanged.
    min_steps_per_epoch: int = 100
    min_steps: int = 3000
    #: the validation loss is a Monte-Carlo flow-matching loss (random t, ε per item); the validation set
    #: is repeated so one epoch's loss averages at least this many (item, t, ε) draws
    min_val_draws: int = 2048
    #: after training, scale each dimension's posterior spread (in logit space, about each item's mean) by
    #: the factor that minimises the validation items' CRPS (``spread_calibration``): the network fits its
    #: training items better than new ones, so its raw spread is too narrow on held-out data
    calibrate_spread: bool = True
    calibration_draws: int = 200
    #: ODE integration when sampling; {} = BayesFlow's default (adaptive tsit5). Euler with fixed steps
    #: is 5-6x faster on CPU and deterministic in cost.
    sampler: dict[str, Any] = field(default_factory=lambda: {"method": "euler", "steps": 50})
    verbose: int = 2


def split_ids(ids: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Deterministic per-id split (a pure function of (seed, id)), so growing a campaign keeps old splits."""
    if val_fraction <= 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need 0 < val_fraction, 0 <= test_fraction, sum < 1; got {val_fraction}, {test_fraction}.")
    u = np.array([item_rng(seed, int(i), stream=7).uniform() for i in ids])
    test = u < test_fraction
    val = (u >= test_fraction) & (u < test_fraction + val_fraction)
    return {"train": ids[~test & ~val], "val": ids[val], "test": ids[test]}


def _build_approximator(config: EstimatorConfig):
    bf = import_bayesflow()
    from brainrl.sbi.inference.networks import FrameMLPSummary

    adapter = (
        bf.Adapter().to_array().convert_dtype("float64", "float32")
        .constrain("theta", lower=0.0, upper=1.0)  # train in logit space; samples map back into [0, 1]
        .rename("theta", "inference_variables").rename("coeffs", "summary_variables").rename("mask", "summary_mask")
        .keep(["inference_variables", "summary_variables", "summary_mask"])
    )
    flow = bf.networks.FlowMatching(
        subnet="time_mlp",
        subnet_kwargs={"widths": tuple(config.flow_widths), "time_embedding_dim": config.time_embedding_dim,
                       "dropout": config.flow_dropout},
    )
    summary = FrameMLPSummary(hidden=config.hidden, summary_dim=config.summary_dim, dropout=config.dropout)
    return bf, bf.ContinuousApproximator(inference_network=flow, summary_network=summary, adapter=adapter,
                                         standardize="inference_variables")


@dataclass
class InputScaling:
    """Per-component z-score of the summary inputs; padded frames stay exactly zero."""

    mean: np.ndarray  # (k,)
    std: np.ndarray  # (k,)

    @classmethod
    def fit(cls, coeffs: np.ndarray, mask: np.ndarray) -> "InputScaling":
        valid = np.asarray(coeffs, np.float64)[np.asarray(mask) > 0]  # (frames, k)
        if len(valid) < 2:
            raise ValueError("input standardisation needs at least two valid frames in the training items.")
        std = valid.std(axis=0)
        return cls(valid.mean(axis=0).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32))

    def apply(self, coeffs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (((coeffs - self.mean) / self.std) * (mask[..., None] > 0)).astype(np.float32)

    def save(self, folder: Path) -> None:
        np.savez(folder / SCALING_FILE, mean=self.mean, std=self.std)

    @classmethod
    def load(cls, folder: Path) -> "InputScaling | None":
        path = folder / SCALING_FILE
        if not path.is_file():
            return None  # a posterior fitted on raw coefficients
        with np.load(path) as f:
            return cls(f["mean"], f["std"])


def _data_dict(arrays: dict[str, Any], rows: np.ndarray, scaling: InputScaling | None = None,
               repeats: int = 1) -> dict[str, np.ndarray]:
    rows = np.tile(rows, max(1, int(repeats)))
    coeffs, mask = arrays["coeffs"][rows], arrays["mask"][rows]
    return {"theta": np.clip(arrays["theta"][rows], THETA_EPS, 1 - THETA_EPS).astype(np.float32),
            "coeffs": scaling.apply(coeffs, mask) if scaling is not None else coeffs, "mask": mask}


def training_budget(n_train: int, n_val: int, config: EstimatorConfig) -> dict[str, int]:
    """How the step budget maps onto keras epochs for this campaign size (recorded in the card)."""
    natural = math.ceil(n_train / config.batch_size)
    repeats = max(1, math.ceil(config.min_steps_per_epoch / natural))
    steps_per_epoch = math.ceil(n_train * repeats / config.batch_size)
    floor_epochs = math.ceil(config.min_steps / steps_per_epoch)
    return {"train_repeats_per_epoch": repeats, "steps_per_epoch": steps_per_epoch,
            "max_epochs": max(config.max_epochs, floor_epochs), "early_stopping_from_epoch": floor_epochs,
            "val_repeats": max(1, math.ceil(config.min_val_draws / max(n_val, 1)))}


def step_floor_callback(floor_epochs: int):
    """A keras callback that cancels an early stop requested before epoch ``floor_epochs`` (the step budget's
    floor). Put it after ``EarlyStopping``, which keeps tracking the best epoch and restores it at the end."""
    import keras

    class StepFloor(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch + 1 < floor_epochs and self.model.stop_training:
                self.model.stop_training = False

    return StepFloor()


@dataclass
class FitResult:
    out_dir: Path
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    best_val_loss: float
    seconds: float


def campaign_rows(arrays: dict[str, Any], config: EstimatorConfig) -> dict[str, np.ndarray]:
    """Row indices of the train/val/test parts: each campaign (``arrays["source"]``) is split by its own
    ids with ``split_ids``, so a campaign's held-out items are the same alone or fitted with others."""
    ids = np.asarray(arrays["ids"])
    source = np.asarray(arrays.get("source", np.zeros(len(ids), dtype=int)))
    rows: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for s in np.unique(source):
        here = np.flatnonzero(source == s)
        splits = split_ids(ids[here], config.val_fraction, config.test_fraction, config.seed)
        row_of = {int(ids[r]): r for r in here}
        for name, part in splits.items():
            rows[name].append(np.array([row_of[int(i)] for i in part], dtype=int))
    return {name: np.concatenate(parts) if parts else np.zeros(0, int) for name, parts in rows.items()}


def heldout_rows(ids: np.ndarray, meta: dict[str, Any], split: str) -> np.ndarray:
    """Rows of one campaign's ``split`` part under a fitted posterior's split rule (its seed and fractions):
    the same items the fit held out when the campaign was a training campaign."""
    cfg = meta.get("config", {})
    parts = split_ids(np.asarray(ids), cfg.get("val_fraction", 0.1), cfg.get("test_fraction", 0.1), cfg.get("seed", 0))
    wanted = set(int(i) for i in parts[split])
    return np.array([r for r, i in enumerate(ids) if int(i) in wanted], dtype=int)


def fit_posterior(arrays: dict[str, Any], out_dir: str | Path, config: EstimatorConfig | None = None,
                  data_dir: str | Path | Sequence[str | Path] | None = None) -> FitResult:
    """Train on campaign arrays (``brainrl.sbi.simulation.campaign.load_campaign_arrays``, or several combined by
    ``combine_campaign_arrays``) and save to ``out_dir``."""
    config = config or EstimatorConfig()
    out_dir = Path(out_dir)
    ids = np.asarray(arrays["ids"])
    rows = campaign_rows(arrays, config)
    splits = {name: ids[part] for name, part in rows.items()}
    if len(rows["train"]) < config.batch_size or len(rows["val"]) == 0:
        raise ValueError(f"{len(ids)} items give {len(rows['train'])} training and {len(rows['val'])} validation "
                         f"items; simulate more (at least ~{4 * config.batch_size}) or change the fractions.")
    bf, approximator = _build_approximator(config)
    import keras

    keras.utils.set_random_seed(config.seed)
    scaling = InputScaling.fit(arrays["coeffs"][rows["train"]], arrays["mask"][rows["train"]]) \
        if config.standardize_inputs else None
    budget = training_budget(len(rows["train"]), len(rows["val"]), config)
    train = bf.OfflineDataset(data=_data_dict(arrays, rows["train"], scaling, budget["train_repeats_per_epoch"]),
                              batch_size=config.batch_size, adapter=approximator.adapter)
    val = bf.OfflineDataset(data=_data_dict(arrays, rows["val"], scaling, budget["val_repeats"]),
                            batch_size=config.batch_size, adapter=approximator.adapter)
    approximator.compile(optimizer=keras.optimizers.AdamW(learning_rate=config.learning_rate,
                                                          weight_decay=config.weight_decay))
    callbacks = [
        # the best validation epoch is tracked from the first epoch (and restored at the end); the step floor
        # only forbids stopping before it (keras' start_from_epoch would also ignore the epochs before it)
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience,
                                      restore_best_weights=True),
        step_floor_callback(budget["early_stopping_from_epoch"]),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=config.lr_factor, patience=config.lr_patience,
                                          min_lr=config.min_lr),
    ]
    started = time.time()
    history = approximator.fit(dataset=train, validation_data=val, epochs=budget["max_epochs"], callbacks=callbacks,
                               verbose=config.verbose)
    seconds = time.time() - started
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    val_losses = hist.get("val_loss", [float("nan")])
    out_dir.mkdir(parents=True, exist_ok=True)
    approximator.save(str(out_dir / APPROXIMATOR_FILE))
    if scaling is not None:
        scaling.save(out_dir)
    elif (out_dir / SCALING_FILE).exists():
        (out_dir / SCALING_FILE).unlink()
    projection: Projection = arrays["projection"]
    projection.save(out_dir / "projection")
    dirs = [str(d) for d in ([data_dir] if isinstance(data_dir, (str, Path)) else (data_dir or []))]
    manifests = arrays.get("manifests") or [arrays.get("manifest", {})]
    meta = {
        "param_names": list(PARAM_NAMES), "config": asdict(config),
        "data": {"dir": dirs[0] if len(dirs) == 1 else dirs or None, "fingerprint": data_fingerprint(ids),
                 "campaign": manifests[0].get("fingerprint") if len(manifests) == 1 else
                 [m.get("fingerprint") for m in manifests],
                 "generator": sorted(set(arrays.get("generator", [])))},
        "campaigns": [campaign_identity(m) for m in manifests],
        "splits": {k: [int(i) for i in v] for k, v in splits.items()},
        "projection": projection.describe(), "history": hist, "epochs": len(val_losses),
        "best_val_loss": float(np.nanmin(val_losses)), "fit_seconds": round(seconds, 2),
        "training": {**budget, "optimizer_steps": budget["steps_per_epoch"] * len(val_losses),
                     "best_epoch": int(np.nanargmin(val_losses)) + 1,
                     "steps_to_best": budget["steps_per_epoch"] * (int(np.nanargmin(val_losses)) + 1),
                     "val_draws_per_epoch": len(rows["val"]) * budget["val_repeats"],
                     "input_standardisation": "per-component z-score over the training items' valid frames"
                     if scaling is not None else "none (raw PCA coefficients)"},
        "versions": versions(SBI_PACKAGES), "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if config.calibrate_spread:
        posterior = Posterior(approximator, projection, meta, scaling)
        meta["spread_calibration"] = spread_calibration(
            posterior, arrays["coeffs"][rows["val"]], arrays["mask"][rows["val"]], arrays["theta"][rows["val"]],
            n_samples=config.calibration_draws, seed=config.seed)
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1))
    return FitResult(out_dir, len(splits["train"]), len(splits["val"]), len(splits["test"]), len(val_losses),
                     meta["best_val_loss"], seconds)


SPREAD_GRID = np.round(np.arange(0.5, 3.0001, 0.05), 3)  # candidate spread factors


def crps_of_draws(draws: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """(n, d) continuous ranked probability score of draws (n, S, d) for the truth (n, d):
    E|X − θ| − ½ E|X − X'| (a proper score: lower is better, minimised by the true predictive)."""
    draws = np.sort(np.asarray(draws, np.float64), axis=1)
    n_draws = draws.shape[1]
    weights = (2 * np.arange(1, n_draws + 1) - n_draws - 1)[None, :, None]
    spread = 2 * np.sum(weights * draws, axis=1) / n_draws**2  # E|X − X'| from the order statistics
    return np.mean(np.abs(draws - theta[:, None, :]), axis=1) - 0.5 * spread


def _logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, THETA_EPS, 1 - THETA_EPS)
    return np.log(x) - np.log1p(-x)


def scale_spread(draws: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Draws (n, S, d) with each dimension's spread scaled by ``factors`` (d,) in logit space about each
    item's logit-space mean; the result stays in (0, 1)."""
    z = _logit(np.asarray(draws, np.float64))
    centre = z.mean(axis=1, keepdims=True)
    return (1.0 / (1.0 + np.exp(-(centre + np.asarray(factors, np.float64) * (z - centre))))).astype(np.float32)


def spread_calibration(posterior: "Posterior", coeffs: np.ndarray, mask: np.ndarray, theta: np.ndarray,
                       n_samples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Per-dimension spread factors that minimise the mean CRPS of ``n_samples`` draws on held-out items
    (the fit's validation items), chosen on ``SPREAD_GRID``; > 1 widens an over-confident posterior.
    Only the spread about each item's centre changes, so the posterior means move little."""
    theta = np.asarray(theta, np.float64)
    if len(theta) < 10:
        raise ValueError(f"spread calibration needs >= 10 held-out items, got {len(theta)}.")
    raw = posterior.sample((coeffs, mask), n_samples, seed=seed, calibrate=False)
    scores = np.stack([crps_of_draws(scale_spread(raw, np.full(raw.shape[2], f)), theta).mean(axis=0)
                       for f in SPREAD_GRID])  # (grid, d)
    best = scores.argmin(axis=0)
    names = posterior.param_names
    return {"method": "per-dimension spread factor in logit space minimising the validation items' mean CRPS",
            "n_items": int(len(theta)), "n_samples": int(n_samples), "grid": [float(SPREAD_GRID[0]), float(SPREAD_GRID[-1])],
            "factor": {n: float(SPREAD_GRID[b]) for n, b in zip(names, best)},
            "crps_raw": {n: float(scores[list(SPREAD_GRID).index(1.0), j]) for j, n in enumerate(names)},
            "crps_calibrated": {n: float(scores[b, j]) for j, (n, b) in enumerate(zip(names, best))}}


def calibrate_posterior(folder: str | Path, arrays: dict[str, Any] | None = None, n_samples: int = 200) -> dict[str, Any]:
    """(Re)compute a saved posterior's spread calibration on its validation items (``arrays``: its
    training campaign(s), default the folders in its card) and store it in its card."""
    folder = Path(folder)
    posterior = Posterior.load(folder)
    if arrays is None:
        from brainrl.sbi.simulation.campaign import combine_campaign_arrays

        dirs = posterior.meta.get("data", {}).get("dir")
        if not dirs:
            raise ValueError(f"{folder}'s card names no campaign folder; pass the training campaign(s).")
        arrays = combine_campaign_arrays([dirs] if isinstance(dirs, str) else dirs)
    cfg = EstimatorConfig(**{k: v for k, v in posterior.meta.get("config", {}).items()
                             if k in EstimatorConfig.__dataclass_fields__})
    rows = campaign_rows(arrays, cfg)
    if data_fingerprint(np.asarray(arrays["ids"])) != posterior.meta.get("data", {}).get("fingerprint"):
        raise ValueError("these campaign arrays are not the posterior's training data; pass its campaign(s).")
    result = spread_calibration(posterior, arrays["coeffs"][rows["val"]], arrays["mask"][rows["val"]],
                                arrays["theta"][rows["val"]], n_samples=n_samples, seed=cfg.seed)
    posterior.meta["spread_calibration"] = result
    (folder / META_FILE).write_text(json.dumps(posterior.meta, indent=1))
    return result


def campaign_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a posterior must know about a training campaign to decode new texts the same way: the
    campaign fingerprint, generator, speech + brain pipeline and the text format (``block_text`` of the
    writer's cleaned headlines)."""
    config = manifest.get("config", {})
    return {"fingerprint": manifest.get("fingerprint"), "name": config.get("name"),
            "generator": manifest.get("generator"), "pipeline": manifest.get("pipeline"),
            "text_format": {"spoken": "block_text", "writer": config.get("writer")}}


def data_fingerprint(ids: np.ndarray) -> str:
    return content_hash(sorted(int(i) for i in ids), 16)


class Posterior:
    """A fitted q(θ | brain sequence): ``sample``, ``mean`` and ``summaries`` over a batch of inputs.

    Inputs: a list of ``BrainMap``s or (T, 20,484) arrays (projected here with the stored
    standardisation and PCA), or a projected ``(coeffs (n, t_max, k), mask (n, t_max))`` pair / dict.
    """

    def __init__(self, approximator: Any, projection: Projection, meta: dict[str, Any],
                 scaling: InputScaling | None = None):
        self.approximator, self.projection, self.meta = approximator, projection, meta
        self.scaling = scaling
        self.param_names: tuple[str, ...] = tuple(meta.get("param_names", PARAM_NAMES))

    @classmethod
    def load(cls, folder: str | Path) -> "Posterior":
        folder = Path(folder)
        if not (folder / APPROXIMATOR_FILE).is_file():
            raise FileNotFoundError(f"{folder} holds no {APPROXIMATOR_FILE}; fit one with `brainrl sbi fit`.")
        import_bayesflow()
        import keras

        approximator = keras.saving.load_model(str(folder / APPROXIMATOR_FILE))
        meta = json.loads((folder / META_FILE).read_text())
        return cls(approximator, Projection.load(folder / "projection"), meta, InputScaling.load(folder))

    def _conditions(self, coeffs: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """What the network was trained on: standardised coefficients (when fitted so) and the mask."""
        return {"coeffs": self.scaling.apply(coeffs, mask) if self.scaling is not None else coeffs, "mask": mask}

    def prepare(self, inputs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Inputs → (coeffs (n, t_max, k), mask (n, t_max)) float32."""
        if isinstance(inputs, dict):
            coeffs, mask = inputs["coeffs"], inputs["mask"]
        elif isinstance(inputs, tuple) and len(inputs) == 2:
            coeffs, mask = inputs
        else:
            sequences = [item if isinstance(item, np.ndarray) else getattr(item, "data", item) for item in inputs]
            for seq in sequences:
                if not isinstance(seq, np.ndarray) or seq.ndim != 2:
                    raise ValueError("posterior inputs must be BrainMaps, (T, V) arrays, or a (coeffs, mask) pair; "
                                     f"got {type(seq).__name__}.")
            coeffs, mask = self.projection.project_many(sequences)
        coeffs, mask = np.asarray(coeffs, np.float32), np.asarray(mask, np.float32)
        expected = (self.projection.t_max, self.projection.k)
        if coeffs.ndim != 3 or coeffs.shape[1:] != expected or mask.shape != coeffs.shape[:2]:
            raise ValueError(f"projected inputs must be coeffs (n, {expected[0]}, {expected[1]}) with a mask "
                             f"(n, {expected[0]}); got {coeffs.shape} and {mask.shape}.")
        return coeffs, mask

    def sample(self, inputs: Any, n: int = 500, seed: int | None = 0, batch_size: int = 64, calibrate: bool = True,
               **integrate: Any) -> np.ndarray:
        """(n_items, n, 6) posterior draws in [0, 1]. ``integrate`` overrides the stored ODE settings;
        ``calibrate``: apply the card's spread calibration (``spread_calibration``), if any."""
        coeffs, mask = self.prepare(inputs)
        kwargs = {**self.meta.get("config", {}).get("sampler", {}), **integrate}
        # BayesFlow repeats every case's inputs n times before the summary network: bound the rows per call
        # (64 cases x 500 draws of 48 x 64 frames took 16 GB of RAM)
        batch_size = max(1, min(int(batch_size), MAX_SAMPLE_ROWS // max(int(n), 1)))
        draws = []
        import torch

        for start in range(0, len(coeffs), batch_size):
            with torch.no_grad():  # import_bayesflow re-enables grads for training; sampling needs none
                out = self.approximator.sample(
                    num_samples=int(n), conditions=self._conditions(coeffs[start:start + batch_size],
                                                                    mask[start:start + batch_size]),
                    seed=None if seed is None else int(seed) + start, **kwargs)
            draws.append(np.asarray(out["theta"], dtype=np.float32))
        if not draws:
            return np.zeros((0, int(n), len(self.param_names)), np.float32)
        draws = np.concatenate(draws)
        factors = (self.meta.get("spread_calibration") or {}).get("factor")
        if calibrate and factors:
            draws = scale_spread(draws, np.array([factors[name] for name in self.param_names]))
        return draws

    def mean(self, inputs: Any, n: int = 200, seed: int | None = 0, **integrate: Any) -> np.ndarray:
        """(n_items, 6) posterior means."""
        return self.sample(inputs, n, seed, **integrate).mean(axis=1)

    def summaries(self, inputs: Any) -> np.ndarray:
        """(n_items, summary_dim) learned summaries z = h(X) (deterministic: dropout is off)."""
        import torch

        coeffs, mask = self.prepare(inputs)
        with torch.no_grad():
            return np.asarray(self.approximator.summarize(self._conditions(coeffs, mask)), dtype=np.float32)
