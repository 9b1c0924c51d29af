"""Held-out recovery on the weak known channel of tests/sbi/lexical_channel.py (tests/sbi/inference/test_recovery.py) under three estimator setups:
the paper's schedule on raw coefficients (the old default), input standardisation alone, and
standardisation + the step budget (the default). Prints per-dimension r and writes JSON.

    python scripts/sbi_recovery_ablation.py --out docs/bench/sbi_recovery_ablation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.sbi.lexical_channel import LexicalChannel  # noqa: E402  (the tests' known channel, one definition)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--out", default="docs/bench/sbi_recovery_ablation.json")
    args = parser.parse_args()
    from brainrl.sbi.inference.estimator import EstimatorConfig, Posterior, fit_posterior

    arrays = LexicalChannel().campaign(args.n)
    quick = {"verbose": 0, "sampler": {"method": "euler", "steps": 20}}
    setups = {
        "paper schedule, raw coefficients (old default)": EstimatorConfig(
            standardize_inputs=False, min_steps=0, min_steps_per_epoch=1, min_val_draws=1, **quick),
        "paper schedule, standardised inputs": EstimatorConfig(
            min_steps=0, min_steps_per_epoch=1, min_val_draws=1, **quick),
        "standardised + step budget (default)": EstimatorConfig(**quick),
        "standardised + step budget, lr 1e-3 (test)": EstimatorConfig(
            min_steps=600, min_steps_per_epoch=50, early_stopping_patience=4, lr_patience=2, learning_rate=1e-3,
            **quick),
    }
    results = {}
    for name, config in setups.items():
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            fit_posterior(arrays, Path(tmp) / "post", config)
            post = Posterior.load(Path(tmp) / "post")
            test = np.array(post.meta["splits"]["test"] + post.meta["splits"]["val"])
            means = post.mean((arrays["coeffs"][test], arrays["mask"][test]), n=100, seed=0)
            r = [float(np.corrcoef(means[:, j], arrays["theta"][test, j])[0, 1]) for j in range(6)]
            results[name] = {"r": [round(v, 3) for v in r], "steps": post.meta["training"]["optimizer_steps"],
                             "best_epoch": post.meta["training"]["best_epoch"], "seconds": round(time.time() - started, 1)}
            print(name, results[name], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"n_items": args.n, "held_out": "val + test ids", "results": results,
                                          "note": "shared 2-core box, 1 torch thread; seconds are contended"}, indent=1))


if __name__ == "__main__":
    main()
