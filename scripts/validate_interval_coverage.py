"""Simulated coverage of the intervals ``brainrl validate`` can give Pearson r and RMSE (not means, so the
evaluation core's cluster t interval does not apply to them as it stands).

Each trial draws P held-out prompts (θ* ~ U(0, 1)) with c completions each; a completion decodes to
``a·θ* + u_prompt + e`` (prompt effect u, completion noise e), for a base (a = 0.5) and a tuned (a = 0.7)
model that share the prompt effects. The population r and RMSE of each model (and tuned − base) come from
10⁶ simulated completions. Methods, all with the prompt as the resampling / clustering unit:

- ``percentile``: the plain percentile prompt bootstrap (what validate used before);
- ``expanded``: the report's expanded percentile bootstrap (``report.stats.percentile_interval``, as the
  report gives Hedges' g);
- ``jackknife``: the delete-one-prompt jackknife t interval (``report.stats.jackknife_interval`` through
  ``pearson_interval``/``rmse_interval``: r on Fisher's z scale, RMSE on the log scale, differences as they
  are); for a mean it is the evaluation core's cluster t interval. ``brainrl validate`` uses this one.

Usage: python scripts/validate_interval_coverage.py [--trials 400] [--boot 400]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from brainrl.report.stats import pearson_interval, percentile_interval, prompt_bootstrap_rows, rmse_interval


def simulate(rng, n_prompts, per_prompt, slopes=(0.5, 0.7), prompt_sd=0.1, noise_sd=0.15):
    theta = np.repeat(rng.uniform(0, 1, n_prompts), per_prompt)
    u = np.repeat(rng.normal(0, prompt_sd, n_prompts), per_prompt)
    index = np.repeat(np.arange(n_prompts), per_prompt)
    decoded = [a * theta + u + rng.normal(0, noise_sd, theta.size) for a in slopes]
    return theta, decoded, index


def stats(theta, decoded):
    r = [np.corrcoef(theta, d)[0, 1] for d in decoded]
    rmse = [np.sqrt(np.mean((d - theta) ** 2)) for d in decoded]
    return np.array([r[0], r[1] - r[0], rmse[0], rmse[1] - rmse[0]])


NAMES = ("r base", "Δr", "RMSE base", "ΔRMSE")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--boot", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    theta, decoded, _ = simulate(rng, 1_000_000, 1)
    truth = stats(theta, decoded)
    print("population:", dict(zip(NAMES, np.round(truth, 4))))
    print("| prompts × completions | statistic | percentile | expanded percentile | jackknife t (validate) |")
    print("|---|---|---|---|---|")
    started = time.time()
    for n_prompts, per_prompt in ((8, 1), (8, 4), (16, 1), (32, 1), (64, 1)):
        hits = np.zeros((3, 4))
        for _ in range(args.trials):
            theta, (base, tuned), index = simulate(rng, n_prompts, per_prompt)
            boots = np.array([stats(theta[rows], [base[rows], tuned[rows]])
                              for rows in prompt_bootstrap_rows(index, args.boot, rng)])
            for m, units in ((0, None), (1, n_prompts)):
                low, high = percentile_interval(boots, 0.95, units)
                hits[m] += (low <= truth) & (truth <= high)
            jack = [pearson_interval(theta, base, index), pearson_interval(theta, tuned, index, paired=base),
                     rmse_interval(base - theta, index), rmse_interval(tuned - theta, index, paired=base - theta)]
            hits[2] += [iv.covers(t) for iv, t in zip(jack, truth)]
        for j, name in enumerate(NAMES):
            cells = " | ".join(f"{100 * hits[m, j] / args.trials:.1f}%" for m in range(3))
            print(f"| {n_prompts} × {per_prompt} | {name} | {cells} |", flush=True)
    print(f"{args.trials} trials per row, {args.boot} bootstrap resamples, seed {args.seed}; "
          f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
