"""The real-stack tier's assets come from brainrl.brain.tribe.standin (shared with the benchmark)."""

from brainrl.brain.tribe.standin import (HIDDEN, N_VERTICES, SRC_ENV, TRIBEV2_COMMIT, VARIANTS,  # noqa: F401
                                         build_checkpoint, build_feature_models, tribev2_source)
