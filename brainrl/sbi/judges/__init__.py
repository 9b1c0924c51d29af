"""Layer 2, text-only θ estimators that never see a brain map: the calibrated offline text judge
(``text``) and the LLM cycle-consistency evaluator (``cycle``). Baselines for the posterior and
independent judges of θ-targeted generators. Imports only ``sbi.simulation``."""
