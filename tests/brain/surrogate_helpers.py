"""Shared pieces for the surrogate tests: varied texts and a small student distilled from the real
offline teacher (espeak speech + the synthetic model), built once per test session."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

SUBJECTS = ["The river", "A quiet teacher", "My neighbour's old dog", "The committee", "Scientists",
            "The small garden behind the library", "Our city", "The storm", "A child", "Music"]
VERBS = ["moved slowly", "announced a plan", "sings", "waited for hours", "changed everything", "is bright",
         "explained the results carefully", "grew", "failed", "returned home"]
CLAUSES = ["", ", which nobody expected", " because the weather turned", " although it was late",
           ", and the crowd stayed", " when the morning came, whereas the night was loud",
           " that the council had promised", " before anyone noticed, since the bridge was closed"]
TAILS = ["", " It rained.", " Then everyone laughed about the unbelievably complicated misunderstanding.",
         " Why?", " The end"]


def varied_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences of varied length, syntax and vocabulary."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen = set()
    while len(out) < n:
        parts = [SUBJECTS[rng.integers(len(SUBJECTS))], " ", VERBS[rng.integers(len(VERBS))]]
        for _ in range(int(rng.integers(0, 3))):
            parts.append(CLAUSES[rng.integers(len(CLAUSES))])
        text = "".join(parts) + "." + TAILS[rng.integers(len(TAILS))]
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def teacher_config():
    from brainrl.brain.pipeline import PipelineConfig

    return PipelineConfig(speech="espeak", model="synthetic", cache_dir="")


@functools.lru_cache(maxsize=1)
def distilled(k: int = 24) -> tuple[Path, dict]:
    """A student distilled on 160 varied texts, checked on 60 others; returns (folder, card)."""
    from brainrl.brain.distill import DistillConfig, distill, teacher_maps
    from brainrl.brain.pipeline import BrainPipeline

    pipeline = BrainPipeline.shared(teacher_config())
    texts = varied_texts(220, seed=0)
    groups = [i // 4 for i in range(len(texts))]
    train = teacher_maps(texts[:160], pipeline, groups[:160])
    heldout = teacher_maps(texts[160:], pipeline, groups[160:])
    folder = Path(tempfile.mkdtemp(prefix="brainrl-test-student-"))
    teacher = {"pipeline": vars(teacher_config()), "identity": pipeline.model.identity()}
    _, card = distill(train, heldout, DistillConfig(k=k), teacher=teacher, data={"source": "varied_texts"},
                      out_dir=folder, rois=["broca", "auditory", "v1", "wernicke"])
    return folder, card
