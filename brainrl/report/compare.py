"""From two models' completions and predicted maps to the statistics, figures and report.

This module knows nothing about how completions were generated or maps predicted (the CLI does that);
it takes texts, prompts and maps (``BrainMap``-like objects with ``.data`` (T, 20,484), plain arrays,
or failures) and turns them into per-completion ROI values, time courses and mean maps.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.cortex.rois import ANCHOR_ROI_NAMES, ROI, get_roi, list_rois
from brainrl.cortex.stats import ROIAverager, as_maps
from brainrl.provenance import versions
from brainrl.report.data import Comparison, ExtractedModel, ModelOutputs, ReportConfig
from brainrl.report.stats import compare_samples

log = logging.getLogger(__name__)

WHOLE_CORTEX = ("global", "left_hemisphere", "right_hemisphere")
#: presets kept only to reproduce the anchor's numbers, or duplicates of another row
_SKIPPED_PRESETS = ("all_vertices",)


def default_roi_names(target: str | ROI) -> list[ROI]:
    """Every named ROI preset (target first, then the anchor's 20, the other presets, then global and the
    two hemispheres). The ``anchor_*`` originals and ``all_vertices`` are left out as near-duplicates."""
    target_roi = get_roi(target)
    names = [n for n in ANCHOR_ROI_NAMES]
    names += [n for n in list_rois() if n not in names and n not in WHOLE_CORTEX and not n.startswith("anchor_")
              and n not in _SKIPPED_PRESETS]
    rois = [target_roi] + [get_roi(n) for n in names if n != target_roi.name]
    return rois + [get_roi(n) for n in WHOLE_CORTEX if n != target_roi.name]


def _failure_reason(item: Any) -> str | None:
    if item is None:
        return "no prediction"
    if hasattr(item, "reason") and not hasattr(item, "data"):
        return str(item.reason)
    return None


def extract(outputs: ModelOutputs, averager: ROIAverager, prompt_index: dict[str, int]) -> ExtractedModel:
    """ROI values, time courses and mean maps of every usable completion; failures are listed, not zeroed."""
    keep_texts, keep_prompts, strata, words, values, courses, means, failures = [], [], [], [], [], [], [], []
    for i, (text, prompt, item) in enumerate(zip(outputs.texts, outputs.prompts, outputs.maps)):
        reason = _failure_reason(item)
        if reason is None:
            try:
                data = as_maps(item, name=f"{outputs.label} map {i}")
                if data.ndim != 2:
                    raise ValueError(f"expected one (T, 20484) map, got shape {data.shape}")
            except ValueError as err:
                reason = str(err)
        if reason is not None:
            failures.append({"index": i, "prompt": prompt, "text": text, "reason": reason})
            continue
        course = averager.timecourses(data)
        keep_texts.append(text)
        keep_prompts.append(prompt)
        strata.append(prompt_index[prompt])
        words.append(len(text.split()))
        courses.append(course.astype(np.float32))
        values.append(course.mean(axis=0))
        means.append(data.mean(axis=0, dtype=np.float64).astype(np.float32))
    if failures:
        log.warning("%s: %d of %d completions have no map (%s)", outputs.label, len(failures), len(outputs.texts),
                    failures[0]["reason"])
    k = len(averager.names)
    return ExtractedModel(
        outputs.label, keep_texts, keep_prompts, np.asarray(strata, np.int64), np.asarray(words, np.float64),
        np.asarray(values, np.float64).reshape(-1, k), courses,
        np.asarray(means, np.float32).reshape(-1, averager.matrix.shape[0]), failures,
    )


def build_comparison(base: ModelOutputs, tuned: ModelOutputs, config: ReportConfig | None = None) -> Comparison:
    """Extract both models' values over the same ROIs and compute the statistics."""
    config = config or ReportConfig()
    started = time.perf_counter()
    base_prompts, tuned_prompts = list(dict.fromkeys(base.prompts)), list(dict.fromkeys(tuned.prompts))
    if set(base_prompts) != set(tuned_prompts):
        missing = sorted(set(base_prompts) ^ set(tuned_prompts))[:3]
        raise ValueError(f"base and tuned must answer the same prompts; these appear for one only: {missing}")
    prompts = base_prompts
    target = get_roi(config.target)
    rois = default_roi_names(target) if config.rois is None else [get_roi(r) for r in config.rois]
    names = [r.name for r in rois]
    if target.name not in names:
        rois, names = [target] + rois, [target.name] + names
    if "global" not in names:
        rois, names = rois + [get_roi("global")], names + ["global"]
    averager = ROIAverager({r.name: r for r in rois})
    index = {p: i for i, p in enumerate(prompts)}
    b, t = extract(base, averager, index), extract(tuned, averager, index)
    for model in (b, t):
        if model.n < 2:
            raise ValueError(f"{model.label}: only {model.n} completion(s) have a brain map "
                             f"({len(model.failures)} failed, e.g. {model.failures[0]['reason'] if model.failures else '-'}).")
    common = sorted(set(b.strata.tolist()) & set(t.strata.tolist()))
    if len(common) < len(prompts):  # a prompt lost every completion of one model: compare on the rest
        lost = [prompts[i] for i in range(len(prompts)) if i not in common]
        log.warning("dropping %d prompt(s) with no usable completion for one model: %s", len(lost), lost[:3])
        b, t = _restrict(b, common), _restrict(t, common)
    stats = compare_samples(b.sample(), t.sample(), names, target=target.name, config=config.stats)
    return Comparison(b, t, prompts, names, stats, config, time.perf_counter() - started)


def _restrict(model: ExtractedModel, strata: Sequence[int]) -> ExtractedModel:
    keep = np.isin(model.strata, strata)
    idx = np.flatnonzero(keep)
    return ExtractedModel(model.label, [model.texts[i] for i in idx], [model.prompts[i] for i in idx],
                          model.strata[keep], model.n_words[keep], model.roi_values[keep],
                          [model.timecourses[i] for i in idx], model.mean_maps[keep], model.failures)


def read_metrics(path: str | Path | None) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl`` (one JSON object per step); [] when absent. Bad lines are skipped with a
    warning rather than dropping the whole curve."""
    if path is None or not Path(path).exists():
        return []
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            log.warning("%s line %d is not JSON (%s); skipped", path, number, err)
    return rows


def write_report(comparison: Comparison, out_dir: str | Path, *, run_card: dict[str, Any] | None = None,
                 metrics: list[dict[str, Any]] | None = None, settings: dict[str, Any] | None = None,
                 evaluation: dict[str, Any] | None = None, surfaces: bool = True) -> dict[str, Path]:
    """Write figures, ``summary.json`` and ``report.html`` to ``out_dir``; return their paths.

    ``settings`` records how the completions and maps were produced (models, sampling, seeds, brain
    pipeline); it goes into both files, and so does ``evaluation`` (``brainrl.evaluation.Evaluation.to_dict()``:
    the rewards and their ROIs with CIs). ``surfaces=False`` skips the (slow, ~10 s each) surface renders.
    """
    from brainrl.report import figures, html, summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    drawn = figures.make_figures(comparison, out / "figures", metrics=metrics or [], surfaces=surfaces)
    record = summary.summary_record(comparison, settings=settings, run_card=run_card,
                                    figures={k: str(p.relative_to(out)) for k, p in drawn.paths.items()},
                                    figure_errors=drawn.errors, evaluation=evaluation,
                                    provenance={"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    summary_path = out / "summary.json"
    summary_path.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    report_path = out / "report.html"
    report_path.write_text(html.render_report(comparison, record, drawn, run_card=run_card),
                           encoding="utf-8")
    arrays_path = out / "roi_values.npz"
    np.savez_compressed(arrays_path, roi_names=np.asarray(comparison.roi_names),
                        base=comparison.base.roi_values, tuned=comparison.tuned.roi_values,
                        base_words=comparison.base.n_words, tuned_words=comparison.tuned.n_words,
                        base_prompt=comparison.base.strata, tuned_prompt=comparison.tuned.strata)
    return {"report": report_path, "summary": summary_path, "roi_values": arrays_path,
            **{f"figure:{k}": p for k, p in drawn.paths.items()}}
