"""Decoding texts with a fitted posterior: arbitrary texts (the paper's real-headline study,
``brainrl sbi decode --file``), and the helpers every decoder of generated text uses (the θ reward, the
θ validator): the campaign text format and the posterior's own speech + brain pipeline.

Texts are spoken in the posterior's training format (``campaign_text``: cleaned headlines closed by a full
stop, as ``parse.block_text``) through the speech + brain pipeline recorded in the posterior's card
(``posterior_pipeline``), so a decoded text goes through what the posterior was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.provenance import versions
from brainrl.report.figures import new_figure, save_figure
from brainrl.sbi.simulation.prior import PARAM_NAMES

_NUMBERING = r"^\s*(?:\d+\s*[.):]|[-*\u2022]+)\s*"


def campaign_text(text: str) -> str | None:
    """A text as the campaigns speak it: one headline per non-empty line, list numbering and bullets
    stripped, each closed by a full stop (``block_text``), joined by spaces. None when nothing is left."""
    import re

    from brainrl.sbi.simulation.parse import block_text

    lines = [re.sub(_NUMBERING, "", line).strip().strip("\"'“”*") for line in (text or "").splitlines()]
    lines = [" ".join(line.split()) for line in lines if line.strip()]
    return block_text(lines) if lines else None


def posterior_pipeline(meta: dict[str, Any]):
    """The ``PipelineConfig`` of the posterior's (first) training campaign, from its card."""
    from brainrl.brain.pipeline import PipelineConfig

    campaigns = meta.get("campaigns") or []
    described = (campaigns[0].get("pipeline") or {}).get("pipeline") if campaigns else None
    if not described:
        raise ValueError("the posterior's card records no campaign pipeline (fitted before brainrl recorded it); "
                         "pass the speech + brain settings explicitly.")
    return PipelineConfig(**described)


def pipeline_identity(described: dict[str, Any] | None) -> dict[str, Any]:
    """The parts of a pipeline description that change maps: speech engine and brain model identity."""
    described = described or {}
    return {"speech": described.get("speech"), "model": described.get("model")}


def decode_file(posterior_dir: Any, text_file: str | Path, out_dir: str | Path, n_samples: int = 500,
                seed: int = 0, judge: bool = False, pipeline: Any = None) -> dict[str, Any]:
    """Decode every text of ``text_file`` (one per line; '#' and blank lines skipped); write JSON and a plot.
    ``posterior_dir`` is a posterior folder or a loaded posterior; ``pipeline`` defaults to the one of the
    posterior's training campaign (from its card)."""
    from brainrl.brain.base import BrainMap
    from brainrl.brain.pipeline import BrainPipeline
    from brainrl.sbi.inference.estimator import Posterior

    path = Path(text_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a text file with one headline (or block) per line.")
    raw = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    raw = [line for line in raw if line and not line.startswith("#")]
    if not raw:
        raise ValueError(f"{path} holds no texts (one per line; '#' lines are comments).")
    posterior = Posterior.load(posterior_dir) if isinstance(posterior_dir, (str, Path)) else posterior_dir
    pipe = pipeline or BrainPipeline(posterior_pipeline(posterior.meta))
    texts = [campaign_text(t) for t in raw]
    maps = pipe([t for t in texts if t])
    ok = [i for i, t in enumerate(texts) if t]
    good = [(i, m) for i, m in zip(ok, maps) if isinstance(m, BrainMap)]
    failures = {i: getattr(m, "reason", repr(m)) for i, m in zip(ok, maps) if not isinstance(m, BrainMap)}
    rows: list[dict[str, Any]] = [{"text": t, "spoken": texts[i], "failed": failures.get(i, None if texts[i] else
                                                                                         "empty after cleaning")}
                                  for i, t in enumerate(raw)]
    if good:
        draws = posterior.sample([m for _, m in good], n_samples, seed=seed)
        for (i, _), d in zip(good, draws):
            rows[i]["posterior_mean"] = dict(zip(PARAM_NAMES, np.round(d.mean(axis=0), 4).tolist()))
            lo, hi = np.percentile(d, [5, 95], axis=0)
            rows[i]["interval_90"] = {n: [round(float(a), 4), round(float(b), 4)] for n, a, b in zip(PARAM_NAMES, lo, hi)}
    if judge:
        from brainrl.sbi.judges.text import TextJudge

        scores = TextJudge.load().predict([texts[i] or "" for i in range(len(raw))])
        for i in range(len(raw)):
            if texts[i]:
                rows[i]["judge"] = dict(zip(PARAM_NAMES, np.round(scores[i], 4).tolist()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = "| # | text | " + " | ".join(n[:4] for n in PARAM_NAMES) + " |"
    lines = [header, "|---|---|" + "---|" * len(PARAM_NAMES)]
    for i, row in enumerate(rows):
        means = row.get("posterior_mean")
        cells = " | ".join(f"{means[n]:.2f}" for n in PARAM_NAMES) if means else f"failed: {row['failed']}"
        lines.append(f"| {i + 1} | {row['text'][:60]} | {cells} |")
    report = {"posterior": str(posterior_dir) if isinstance(posterior_dir, (str, Path)) else repr(posterior_dir),
              "file": str(path), "n_samples": n_samples, "seed": seed,
              "pipeline": pipe.describe() if hasattr(pipe, "describe") else repr(pipe), "rows": rows,
              "table": "\n".join(lines), "versions": versions(("brainrl", "numpy", "bayesflow"))}
    (out_dir / "decoded.json").write_text(json.dumps(report, indent=1, default=str))
    if good:
        _plot_decoded(rows, out_dir / "decoded.png")
    return report


def _plot_decoded(rows: Sequence[dict[str, Any]], path: Path) -> str:
    decoded = [(i, r) for i, r in enumerate(rows) if "posterior_mean" in r]
    fig = new_figure(2.2 * len(PARAM_NAMES), 0.35 * len(decoded) + 1.5)
    axes = fig.subplots(1, len(PARAM_NAMES), sharey=True)
    for ax, name in zip(axes, PARAM_NAMES):
        for y, (i, r) in enumerate(decoded):
            lo, hi = r["interval_90"][name]
            ax.plot([lo, hi], [y, y], color="0.6", lw=2)
            ax.plot(r["posterior_mean"][name], y, "o", color="C0", ms=4)
            if "judge" in r:
                ax.plot(r["judge"][name], y, "x", color="C3", ms=4)
        ax.set_xlim(0, 1)
        ax.set_title(name, fontsize=9)
    axes[0].set_yticks(range(len(decoded)), [str(i + 1) for i, _ in decoded])
    axes[0].invert_yaxis()
    fig.suptitle("posterior mean (o), 90% interval, text judge (x)", fontsize=9)
    return save_figure(fig, path, 110).name
