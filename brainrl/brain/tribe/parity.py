"""How far a TRIBE setting moves predictions and rewards away from a baseline setting (``brainrl tribe parity``).

A comparison predicts the same texts with two ``TribeBrainModel`` settings and reports, over the maps both
return:

- per-TR vertex r: Pearson r across the 20,484 vertices between the two maps' rows at each TR (median, 5th
  percentile, minimum), over TRs both maps have;
- max |difference| relative to the baseline's largest value;
- ROI-reward correlation: for each ROI, the ROI's mean activation (the quantity brainrl's ROI rewards are
  built from) per text under both settings, and Pearson r across texts;
- rank agreement within a batch: Spearman r between the two settings' ROI means over the texts of each
  batch (the ranking GRPO's group-relative advantages use), averaged over batches and ROIs.

Built-in comparisons: ``bf16`` (dtype bfloat16, with any ``float32_parts`` / ``matmul_precision`` given, vs
float32), ``one-pass`` (one-pass text features vs TRIBE's
per-word passes on the same stimuli) and ``pipeline`` (brainrl's fast path, espeak + brainrl's contexts, vs
TRIBE's own pipeline, gTTS + WhisperX + TRIBE's transforms; needs network and the online extra).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.brain.base import BrainMap

log = logging.getLogger(__name__)

DEFAULT_ROIS = ("broca", "wernicke", "auditory", "stg", "v1", "language_left")
#: model arguments that shape a bf16 setting (the ``bf16`` comparison gives them to its candidate only)
MIXED_PRECISION_KEYS = ("float32_parts", "matmul_precision")


@dataclass
class Setting:
    """One side of a comparison: a label, speech engine name, and TribeBrainModel keyword arguments."""

    label: str
    speech: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def comparison_settings(name: str, base: dict[str, Any]) -> tuple[Setting, Setting]:
    """(baseline, candidate) for a built-in comparison, on top of the common ``base`` model arguments."""
    fast = {**base, "speech_path": "fast"}
    if name == "bf16":
        # the bf16 side's mixed-precision choices (TribeConfig.float32_parts, matmul_precision) apply to it alone:
        # the baseline is float32 with true float32 matrix products
        mixed = {k: fast.pop(k) for k in MIXED_PRECISION_KEYS if k in fast}
        label = "bfloat16" + "".join(f", {k}={v}" for k, v in mixed.items())
        return (Setting("float32", "espeak", {**fast, "dtype": "float32", "matmul_precision": "highest"}),
                Setting(label, "espeak", {**fast, **mixed, "dtype": "bfloat16", "allow_bf16": True}))
    if name == "one-pass":
        return (Setting("per-word (TRIBE)", "espeak", {**fast, "text_features": "reference"}),
                Setting("one-pass", "espeak", {**fast, "text_features": "one-pass"}))
    if name == "pipeline":
        return (Setting("TRIBE pipeline (gTTS + WhisperX)", "gtts-whisperx", {**base, "speech_path": "reference"}),
                Setting("brainrl fast path (espeak)", "espeak", fast))
    raise ValueError(f"Unknown comparison {name!r}; choose from bf16, one-pass, pipeline.")


def per_tr_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r across vertices for each TR both maps have."""
    n = min(a.shape[0], b.shape[0])
    x = a[:n] - a[:n].mean(1, keepdims=True)
    y = b[:n] - b[:n].mean(1, keepdims=True)
    denom = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(1) / denom, np.nan)


def compare_maps(base: Sequence[Any], cand: Sequence[Any], roi_masks: dict[str, np.ndarray],
                 batch_size: int) -> dict[str, Any]:
    """Metrics over the items both settings predicted (``BrainMap``s; others count as failures)."""
    from scipy.stats import spearmanr

    both = [i for i, (a, b) in enumerate(zip(base, cand)) if isinstance(a, BrainMap) and isinstance(b, BrainMap)]
    failed = {"baseline": sum(not isinstance(a, BrainMap) for a in base),
              "candidate": sum(not isinstance(b, BrainMap) for b in cand)}
    if not both:
        return {"n_texts": len(base), "n_compared": 0, "failed": failed}
    r_all = np.concatenate([per_tr_r(base[i].data, cand[i].data) for i in both])
    rel = [float(np.abs(base[i].data[: cand[i].data.shape[0]] - cand[i].data[: base[i].data.shape[0]]).max()
                 / (np.abs(base[i].data).max() or 1.0)) for i in both]
    tr_mismatch = sum(base[i].data.shape[0] != cand[i].data.shape[0] for i in both)
    rois: dict[str, Any] = {}
    for name, mask in roi_masks.items():
        x = np.array([float(base[i].data[:, mask].mean()) for i in both])
        y = np.array([float(cand[i].data[:, mask].mean()) for i in both])
        r = float(np.corrcoef(x, y)[0, 1]) if len(both) > 2 and x.std() > 0 and y.std() > 0 else float("nan")
        ranks = []
        for begin in range(0, len(both), batch_size):
            xs, ys = x[begin: begin + batch_size], y[begin: begin + batch_size]
            if len(xs) > 2 and xs.std() > 0 and ys.std() > 0:
                ranks.append(float(spearmanr(xs, ys).statistic))
        rois[name] = {"reward_r": r, "rank_r_within_batch": float(np.mean(ranks)) if ranks else float("nan"),
                      "baseline": x.tolist(), "candidate": y.tolist()}
    finite = r_all[np.isfinite(r_all)]
    rank_values = [v["rank_r_within_batch"] for v in rois.values() if math.isfinite(v["rank_r_within_batch"])]
    return {
        "n_texts": len(base),
        "n_compared": len(both),
        "failed": failed,
        "trs_compared": int(finite.size),
        "items_with_different_tr_counts": int(tr_mismatch),
        "per_tr_vertex_r": {"median": float(np.median(finite)), "p05": float(np.percentile(finite, 5)),
                            "min": float(finite.min())} if finite.size else None,
        "max_abs_diff_relative": {"median": float(np.median(rel)), "max": float(np.max(rel))},
        "roi_reward_r": {k: v["reward_r"] for k, v in rois.items()},
        "rank_r_within_batch_mean": float(np.mean(rank_values)) if rank_values else float("nan"),
        "rois": rois,
        "_per_tr_r": finite.tolist(),
    }


def run_parity(texts: Sequence[str], comparisons: Sequence[str], base_kwargs: dict[str, Any], *,
               rois: Sequence[str] = DEFAULT_ROIS, batch_size: int = 8, speech_dir: str | None = None,
               make_model: Callable[..., Any] | None = None, make_speech: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Predict ``texts`` under each comparison's two settings and compare them (see the module doc)."""
    from brainrl.brain import get_brain_model
    from brainrl.cortex.rois import resolve_mask
    from brainrl.stimulus import get_speech_engine

    make_model = make_model or (lambda **kw: get_brain_model("tribe", **kw))
    make_speech = make_speech or (lambda name: get_speech_engine(name, out_dir=speech_dir))
    if len(texts) < 3:
        raise ValueError(f"brainrl tribe parity needs at least 3 texts (correlations across texts); got {len(texts)}.")
    masks = {name: resolve_mask(name) for name in rois}
    stimuli_by_engine: dict[str, list] = {}
    report: dict[str, Any] = {"n_texts": len(texts), "rois": list(rois), "batch_size": batch_size,
                              "model_kwargs": base_kwargs, "comparisons": {}}
    for name in comparisons:
        baseline, candidate = comparison_settings(name, base_kwargs)
        maps = []
        identities = []
        for setting in (baseline, candidate):
            if setting.speech not in stimuli_by_engine:
                stimuli_by_engine[setting.speech] = make_speech(setting.speech).synthesize(list(texts))
            model = make_model(**setting.model_kwargs)
            try:
                predictions = []
                stimuli = stimuli_by_engine[setting.speech]
                for begin in range(0, len(stimuli), batch_size):
                    predictions.extend(model.predict(stimuli[begin: begin + batch_size]))
                maps.append(predictions)
                identities.append(model.identity())
            finally:
                close = getattr(model, "close", None)
                if close is not None:
                    close()
        result = compare_maps(maps[0], maps[1], masks, batch_size)
        result.update({"baseline": baseline.label, "candidate": candidate.label,
                       "baseline_identity": identities[0], "candidate_identity": identities[1],
                       "failures": {"baseline": [m.reason for m in maps[0] if not isinstance(m, BrainMap)][:5],
                                    "candidate": [m.reason for m in maps[1] if not isinstance(m, BrainMap)][:5]}})
        report["comparisons"][name] = result
        log.info("parity %s: %s", name, {k: result.get(k) for k in ("per_tr_vertex_r", "roi_reward_r")})
    return report


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``parity.json`` (without the per-TR arrays) and ``parity.png`` (per-TR r histograms, ROI scatter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from brainrl.provenance import json_default

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparisons = report["comparisons"]
    fig, axes = plt.subplots(2, max(1, len(comparisons)), figsize=(4.5 * max(1, len(comparisons)), 8), squeeze=False)
    for col, (name, result) in enumerate(comparisons.items()):
        ax = axes[0][col]
        values = result.get("_per_tr_r") or []
        if values:
            ax.hist(values, bins=30, color="#4477aa")
        ax.set_title(f"{name}: per-TR vertex r\n{result.get('candidate')} vs {result.get('baseline')}", fontsize=9)
        ax.set_xlabel("r across 20,484 vertices")
        ax = axes[1][col]
        for roi, entry in (result.get("rois") or {}).items():
            ax.scatter(entry["baseline"], entry["candidate"], s=10, label=f"{roi} (r={entry['reward_r']:.3f})")
        ax.set_xlabel(f"ROI mean, {result.get('baseline')}")
        ax.set_ylabel(f"ROI mean, {result.get('candidate')}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    png = out / "parity.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    clean = {**report, "comparisons": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")}
                                       for k, v in comparisons.items()}}
    path = out / "parity.json"
    path.write_text(json.dumps(clean, indent=2, default=json_default))
    return path, png
