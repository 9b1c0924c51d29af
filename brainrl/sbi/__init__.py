"""Simulation-based inference over six stimulus properties (valence … formality).

Simulator parts (prior, topics, prompts, parsing, generators), campaigns that store projected brain
sequences as sharded Hugging Face datasets, a BayesFlow posterior and its diagnostics, and the
text-only cycle-consistency baseline. BayesFlow is imported lazily (it switches torch grads off).
"""

from brainrl.sbi.prior import PARAM_NAMES, ThetaPrior, theta_for_index
from brainrl.sbi.topics import TOPICS, topic_for_index

__all__ = ["PARAM_NAMES", "TOPICS", "ThetaPrior", "theta_for_index", "topic_for_index"]
