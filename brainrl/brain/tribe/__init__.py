"""TRIBE v2 backend: the real ``tribev2`` package run in-process or in its own worker environment,
plus one-pass text features (``features``) for fast, faithful Llama word features."""

from brainrl.brain.tribe.adapter import TribeBrainModel
from brainrl.brain.tribe.config import DEFAULT_REPO_ID, DEFAULT_REVISION, TribeConfig

__all__ = ["DEFAULT_REPO_ID", "DEFAULT_REVISION", "TribeBrainModel", "TribeConfig"]
