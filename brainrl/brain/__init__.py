"""Brain models: the BrainModel interface, its backends, the cache and the text->map pipeline.

Knows about stimuli and the cortex, never about rewards or training.
"""

from brainrl.brain.base import (
    BRAIN_MODELS,
    N_VERTICES,
    N_VERTICES_HEMI,
    TR_SECONDS,
    BrainMap,
    BrainModel,
    Failed,
    Prediction,
)

BRAIN_MODELS.register("synthetic", "brainrl.brain.synthetic:SyntheticBrainModel")
BRAIN_MODELS.register("tribe", "brainrl.brain.tribe:TribeBrainModel")
BRAIN_MODELS.register("remote", "brainrl.brain.remote:RemoteBrainModel")
BRAIN_MODELS.register("surrogate", "brainrl.brain.surrogate:SurrogateBrainModel")


def get_brain_model(name: str = "synthetic", **kwargs) -> BrainModel:
    """Build a registered brain model by name (``brainrl.brain.BRAIN_MODELS.names()``)."""
    return BRAIN_MODELS.create(name, **kwargs)


__all__ = [
    "BRAIN_MODELS",
    "N_VERTICES",
    "N_VERTICES_HEMI",
    "TR_SECONDS",
    "BrainMap",
    "BrainModel",
    "Failed",
    "Prediction",
    "get_brain_model",
]
