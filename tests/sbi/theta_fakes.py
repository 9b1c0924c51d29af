"""A posterior with known draws, for reward/validator math in fast tests (fitting the real BayesFlow
posterior is tested in test_estimator.py and, end to end, in the slow tests here).

``KnownPosterior`` has the real ``Posterior`` interface: ``prepare`` (through a real ``Projection``),
``sample(inputs, n, seed)``, ``mean``, ``summaries``, ``param_names``, ``meta``. Its posterior for an input
is N(μ(x), sd²) per dimension, clipped to [0, 1], where μ(x) is a fixed squashing of the input's
masked-mean PCA coefficients, so draws depend on the brain map and on the seed only.
"""

from __future__ import annotations

import numpy as np

from brainrl.brain.base import N_VERTICES
from brainrl.sbi.simulation.prior import PARAM_NAMES
from brainrl.sbi.simulation.projection import Projection


class KnownPosterior:
    def __init__(self, k: int = 4, t_max: int = 8, sd: float = 0.05, seed: int = 0, ood_reference=None):
        rng = np.random.default_rng(seed)
        basis = np.linalg.qr(rng.normal(size=(N_VERTICES, k)))[0].T.astype(np.float32)
        self.projection = Projection(mean=np.zeros(N_VERTICES, np.float32), std=np.ones(N_VERTICES, np.float32),
                                     components=basis, t_max=t_max)
        self.loading = rng.normal(size=(k, len(PARAM_NAMES)))
        self.sd = sd
        self.param_names = PARAM_NAMES
        self.meta = {"data": {"dir": None, "fingerprint": "known"}, "config": {}}
        self.ood_reference = ood_reference
        self.sample_calls: list[int] = []

    def prepare(self, inputs):
        if isinstance(inputs, tuple):
            return inputs
        sequences = [getattr(item, "data", item) for item in inputs]
        return self.projection.project_many(sequences)

    def summaries(self, inputs) -> np.ndarray:
        coeffs, mask = self.prepare(inputs)
        return (coeffs * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)

    def location(self, inputs) -> np.ndarray:
        """μ(x): the known centre of each input's posterior, (n, 6) in (0, 1)."""
        z = self.summaries(inputs)
        return 1 / (1 + np.exp(-np.tanh(z @ self.loading)))

    def sample(self, inputs, n: int = 500, seed: int | None = 0, **integrate) -> np.ndarray:
        mu = self.location(inputs)
        self.sample_calls.append(len(mu))
        noise = np.random.default_rng(seed).normal(size=(len(mu), n, mu.shape[1]))
        return np.clip(mu[:, None, :] + self.sd * noise, 0, 1).astype(np.float32)

    def mean(self, inputs, n: int = 200, seed: int | None = 0) -> np.ndarray:
        return self.sample(inputs, n, seed).mean(axis=1)
