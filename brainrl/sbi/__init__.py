"""Simulation-based inference over six stimulus properties (valence … formality), in layers read top-down;
each imports only the layers above it in this list (tests/test_imports.py enforces it):

- ``simulation``: prior, topics, prompts, parsing, generators (LLM and procedural), the headline writer,
  the fixed projection and resumable campaigns that store projected brain sequences as sharded datasets;
- ``judges``: text-only θ estimators (the offline text judge, the LLM cycle-consistency evaluator);
- ``inference``: the BayesFlow posterior, the OOD score of its inputs, decoding texts through it;
- ``diagnostics``: how good a posterior is (recovery, calibration, cross-generator transfer);
- ``theta``: θ-targeted generation: prompt sets, the θ-target reward, the θ validator.

BayesFlow is imported lazily (it switches torch grads off).
"""

from brainrl.sbi.simulation.prior import PARAM_NAMES, ThetaPrior, theta_for_index
from brainrl.sbi.simulation.topics import TOPICS, topic_for_index

__all__ = ["PARAM_NAMES", "TOPICS", "ThetaPrior", "theta_for_index", "topic_for_index"]
