"""Layer 3, the posterior q(θ | brain sequence): BayesFlow networks and approximator (``estimator``),
the out-of-distribution score of its inputs (``ood``) and decoding texts through the posterior's own
pipeline (``decode``). Imports ``sbi.simulation`` and ``sbi.judges``; BayesFlow only lazily."""
