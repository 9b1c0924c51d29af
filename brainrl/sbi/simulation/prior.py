"""The θ prior: six independent uniforms on [0, 1], in the paper's order.

Items are reproducible one by one: ``theta_for_index(seed, i)`` depends only on (seed, i), so a
resumed or re-sharded campaign redraws exactly the same θ for the same item id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: affect (valence, arousal, dominance) then stance (subjectivity, certainty, formality)
PARAM_NAMES: tuple[str, ...] = ("valence", "arousal", "dominance", "subjectivity", "certainty", "formality")
N_PARAMS = len(PARAM_NAMES)
#: variance of U(0, 1), the prior variance used for posterior contraction
PRIOR_VARIANCE = 1.0 / 12.0


def item_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """A generator owned by one item (and one purpose, ``stream``), independent of batch layout."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative; got seed={seed}, index={index}.")
    return np.random.default_rng([int(seed), int(index), int(stream)])


def theta_for_index(seed: int, index: int) -> np.ndarray:
    """θ of item ``index`` in a campaign seeded with ``seed``: (6,) float64 in [0, 1)."""
    return item_rng(seed, index, stream=0).uniform(0.0, 1.0, size=N_PARAMS)


@dataclass(frozen=True)
class ThetaPrior:
    """Independent U(low, high) per named dimension (the paper: U(0, 1) on all six)."""

    names: tuple[str, ...] = PARAM_NAMES
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"prior needs high > low; got low={self.low}, high={self.high}.")

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """(n, 6) draws. ``rng`` is a numpy Generator or a seed."""
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return gen.uniform(self.low, self.high, size=(int(n), len(self.names)))

    def contains(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta)
        return np.all((theta >= self.low) & (theta <= self.high), axis=-1)

    @property
    def variance(self) -> float:
        return (self.high - self.low) ** 2 / 12.0
