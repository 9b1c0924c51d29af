"""A known, weak text → map channel for estimator and validator tests (no speech, no brain model).

θ → text is the procedural generator; text → map: per headline (one frame each), which level (0..4) of
each dimension's phrase pool it contains, mixed by a fixed rotation into 6 low-variance vertex directions,
while 10 high-variance nuisance directions (SD 40, as PC1 vs PC20-32 on synthetic maps) carry
text-independent noise. The projection reads the first 16 vertices of fsaverage5, so the same channel
gives stored campaign coefficients and full ``BrainMap``s for a posterior to project.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from brainrl.brain.base import N_VERTICES, BrainMap
from brainrl.sbi.simulation import procedural as P
from brainrl.sbi.simulation.parse import parse_headlines
from brainrl.sbi.simulation.prior import theta_for_index
from brainrl.sbi.simulation.projection import Projection
from brainrl.sbi.simulation.prompts import generator_messages
from brainrl.sbi.simulation.topics import TOPICS

POOLS = {"valence": P.VALENCE_CLAUSE, "arousal": P.AROUSAL_MANNER, "dominance": P.DOMINANCE_VERB,
         "subjectivity": P.SUBJECTIVITY_TAIL, "certainty": P.CERTAINTY_MODAL, "formality": P.FORMALITY_SUBJECT}
K, T_MAX = 16, 8


def levels(headline: str) -> np.ndarray:
    """The pool level of each dimension's phrase in a headline (2 = neutral/absent)."""
    out = np.full(6, 2.0)
    for j, pool in enumerate(POOLS.values()):
        hits = [(len(p), level) for level, phrases in enumerate(pool) for p in phrases if p and p in headline]
        if hits:
            out[j] = max(hits)[1]  # the longest matching phrase
    return out


class LexicalChannel:
    def __init__(self, seed: int = 0):
        self.mixing = np.linalg.qr(np.random.default_rng(seed).normal(size=(6, 6)))[0]
        self.projection = Projection(mean=np.zeros(N_VERTICES, np.float32), std=np.ones(N_VERTICES, np.float32),
                                     components=np.eye(K, N_VERTICES, dtype=np.float32), t_max=T_MAX)

    def frame(self, headline: str, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(K, np.float32)
        out[:10] = 40.0 * rng.normal(size=10)  # high-variance, θ-free directions
        out[10:] = (levels(headline) - 2.0) @ self.mixing * 0.5 + 0.3 * rng.normal(size=6)
        return out

    def campaign(self, n: int, seed: int = 0) -> dict:
        """Campaign arrays (``load_campaign_arrays`` layout) of n procedural items."""
        gen, rng = P.ProceduralGenerator(), np.random.default_rng(seed + 1)
        theta = np.stack([theta_for_index(seed, i) for i in range(n)]).astype(np.float32)
        coeffs, mask = np.zeros((n, T_MAX, K), np.float32), np.zeros((n, T_MAX), np.float32)
        for i in range(n):
            reply = gen.generate([generator_messages(theta[i], TOPICS[i % 10])], [seed * 10**6 + i])[0]
            for t, headline in enumerate(parse_headlines(reply)):
                coeffs[i, t], mask[i, t] = self.frame(headline, rng), 1.0
        return {"coeffs": coeffs, "mask": mask, "theta": theta, "ids": np.arange(n), "projection": self.projection,
                "generator": ["procedural"]}

    def __call__(self, texts: list[str]) -> list[BrainMap]:
        """Spoken campaign texts (headlines closed by . ! or ?) → one frame per headline, over fsaverage5."""
        maps = []
        for text in texts:
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            heads = [h for h in re.split(r"(?<=[.!?])\s+", text.strip()) if h][:T_MAX]
            data = np.zeros((len(heads), N_VERTICES), np.float32)
            for t, headline in enumerate(heads):
                data[t, :K] = self.frame(headline, rng)
            maps.append(BrainMap(data, {"model": "lexical-channel"}))
        return maps


class ThetaIgnoringGenerator(P.ProceduralGenerator):
    """The procedural generator asked for a θ of its own (uniform, from the seed) instead of the θ* in the
    prompt: fluent, on topic, in the campaign's register, and blind to the request."""

    def reply(self, messages, seed: int):
        own = np.random.default_rng(int(seed) + 7).uniform(size=6)
        users = [m for m in messages if m.get("role") == "user"]
        swapped = users[-1]["content"]
        for name, value in zip(P.PARAM_NAMES, own):
            swapped = re.sub(rf"(-\s*{name}\s*:\s*)[0-9]*\.?[0-9]+", rf"\g<1>{value:.2f}", swapped)
        return super().reply([*messages[:-1], {"role": "user", "content": swapped}], seed)
