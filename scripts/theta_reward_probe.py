"""Is the θ-target reward a usable training signal for this generator? Measured before any long run.

For θ prompts (a ``brainrl theta-prompts`` JSONL), the base generator writes G completions per prompt (or
an existing run's ``completions.jsonl`` is read); each completion is scored by the training reward's
posterior and by the independent judges (a second posterior fitted on a disjoint campaign, the text
judge). Reported:

- fidelity of the base: Pearson r of each judge's estimate with θ* per dimension (over all completions);
- agreement: within each prompt's group, Spearman ρ between the training reward and each judge's
  −‖θ̂ − θ*‖², averaged over groups (what a group-relative trainer's ranking is worth to the judges);
- signal vs noise: the within-group SD of the reward against the SD of the same texts rescored with other
  posterior draws (``--noise-seed``);
- best-of-G: each judge's distance of the reward-best completion minus the group mean (paired by prompt,
  a t interval over prompts): the most that reward-weighted fine-tuning on these samples can gain;
- with ``--candidate NAME=POSTERIOR`` (repeatable): the same best-of-G and within-group Spearman ρ for every
  candidate training reward decoded by that posterior (dims × mode × OOD action, ``candidate_table``), to
  choose a reward by measurement before training (docs/theta.md, "In-distribution reward").

    python scripts/theta_reward_probe.py --completions runs/RUN/completions.jsonl --steps 1 2 \\
        --prompts recipes/data/theta_headline_train.jsonl --posterior ... --second-posterior ... --out ...
    python scripts/theta_reward_probe.py --prompts recipes/data/theta_headline_train.jsonl --style headline \\
        --n-prompts 24 --group 8 --posterior runs/sbi_procedural/posterior \\
        --second-posterior runs/sbi_disjoint/posterior --out runs/probe/headline.json

CPU-bound (SmolLM2 generation, espeak, the synthetic model, two posteriors); timings are not its point.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _t_interval(values: np.ndarray) -> dict[str, float]:
    """Mean of per-prompt values with the t interval over prompts (report.stats.cluster_interval, one value a prompt)."""
    from brainrl.report.stats import cluster_interval

    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    interval = cluster_interval(values, np.arange(len(values)))
    return {"mean": interval.estimate, "ci_low": interval.low, "ci_high": interval.high, "n": int(len(values))}


def generate(rows, style: str, group: int, temperature: float, max_new_tokens: int, seed: int):
    from brainrl.policy import load_policy, neutralise_generation_config
    from brainrl.policy.sampling import SamplingConfig, sample_completions
    from brainrl.sbi.theta.prompts import system_prompt_for

    model, tokenizer = load_policy("smollm2", "auto", "cpu")
    neutralise_generation_config(model, tokenizer)
    sampling = SamplingConfig(temperature=temperature, max_new_tokens=max_new_tokens)
    texts, index = [], []
    for start in range(0, len(rows), 4):
        chunk = rows[start:start + 4]
        out = sample_completions(model, tokenizer, [r["prompt"] for r in chunk], sampling, num_completions=group,
                                 system=system_prompt_for(style), seed=seed + start)
        texts += out.texts
        index += [start + int(g) for g in out.group.tolist()]
        print(f"generated {len(texts)} completions", flush=True)
    return texts, np.array(index)

DIM_SETS = {"all six": None, "valence+arousal+dominance": ["valence", "arousal", "dominance"],
            "valence+dominance": ["valence", "dominance"]}


def candidate_table(specs, maps, ok, theta, groups, judge_dist, judge_est, n_samples, threshold,
                    form=None, form_weights=(), saved=None):
    """Candidate training rewards (posterior × dims × mode × OOD action) scored on the same maps: for each,
    what best-of-group selection by it gains by each independent judge, and how it ranks like them.

    ``specs`` are ``NAME=POSTERIOR_DIR``; the rewards are ``ThetaTargetReward``'s own scoring and OOD action
    on one set of posterior draws per posterior (seed 0), so candidates differ only in the reward's settings.
    With ``form`` (each completion's ``HeadlineForm`` score, 0 or -1) every candidate is also scored as
    ``reward + w * form`` for each ``w`` in ``form_weights`` (the recipe's weighted sum of the two rewards).
    A ``saved`` dict receives every candidate's per-completion values and each posterior's means (``--save-scores``)."""
    from brainrl.sbi.inference.estimator import Posterior
    from brainrl.sbi.inference.ood import OODReference
    from brainrl.sbi.simulation.prior import PARAM_NAMES
    from brainrl.sbi.theta.reward import ThetaTargetReward

    n, d = theta.shape
    rows, posteriors = [], {}
    for spec in specs:
        name, path = spec.split("=", 1)
        posterior = Posterior.load(path)
        inputs = posterior.prepare(maps)
        draws = np.full((n, n_samples, d), np.nan)
        draws[ok] = np.asarray(posterior.sample(inputs, n_samples, seed=0))
        try:
            scores = OODReference.load(path).score(posterior.summaries(inputs), threshold)
        except FileNotFoundError:
            scores = None
        records = [None] * n
        for j, i in enumerate(np.flatnonzero(ok)):
            records[i] = scores.record(j) if scores is not None else None
        means = draws.mean(axis=1)
        if saved is not None:
            saved[f"{name}/posterior_mean"] = means
        posteriors[name] = {"path": path, "ood_flagged": None if scores is None else float(np.mean(scores.flagged)),
                            "fidelity_r": {p: float(np.corrcoef(means[ok, j], theta[ok, j])[0, 1])
                                           for j, p in enumerate(PARAM_NAMES)}}
        for dims_name, dims in DIM_SETS.items():
            for mode in ("mean", "expected"):
                for action in (("log", "downweight", "none") if scores is not None else ("log",)):
                    reward = ThetaTargetReward(path, dims=dims, mode=mode, n_samples=n_samples, ood=action,
                                               ood_threshold=threshold)
                    theta_values = np.full(n, np.nan)
                    theta_values[ok] = reward.score_draws(draws[ok], theta[ok])
                    for i in np.flatnonzero(ok):
                        if records[i] is not None:
                            kept = reward.apply_ood(float(theta_values[i]), records[i])
                            theta_values[i] = np.nan if kept is None else kept
                    if saved is not None:
                        saved[f"{name}/{dims_name}/{mode}/{action}"] = theta_values
                    for weight in (0.0, *(form_weights if form is not None else ())):
                        values = theta_values + weight * form if weight else theta_values
                        rows.append(_candidate_row(values, groups, judge_dist, judge_est, theta) | {
                            "posterior": name, "dims": dims_name, "mode": mode, "ood": action, "form_weight": weight})
    return {"posteriors": posteriors, "rewards": rows}


def _candidate_row(values, groups, judge_dist, judge_est, theta) -> dict:
    """Best-of-group gain and within-group Spearman ρ of one candidate reward's ``values``, by each judge."""
    from brainrl.report.stats import spearman
    from brainrl.sbi.simulation.prior import PARAM_NAMES

    picked = [(g[np.nanargmax(values[g])], g) for g in groups if np.isfinite(values[g]).any()]
    row = {"reward_none_fraction": float(np.mean(~np.isfinite(values))), "groups_ranked": len(picked)}
    for judge, dist in judge_dist.items():
        row[f"best_of_group_gain/{judge}"] = _t_interval(
            np.array([dist[b] - np.nanmean(dist[g]) for b, g in picked]))
        row[f"within_group_spearman/{judge}"] = _t_interval(
            np.array([spearman(values[g], dist[g]) for g in groups]))
        est = judge_est[judge]
        row[f"best_of_group_sq_error_gain/{judge}"] = {
            p: _t_interval(np.array([np.nanmean((est[g, j] - theta[g, j]) ** 2)
                                     - (est[b, j] - theta[b, j]) ** 2 for b, g in picked]))
            for j, p in enumerate(PARAM_NAMES)}
    return row


def print_candidates(table, judges) -> None:
    """The candidates as a markdown table (best-of-group gain and within-group Spearman ρ, by each judge)."""
    def cell(v):
        return f"{v['mean']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"

    for name, info in table["posteriors"].items():
        r = " ".join(f"{p} {v:+.2f}" for p, v in info["fidelity_r"].items())
        flagged = "no OOD statistics" if info["ood_flagged"] is None else f"{info['ood_flagged']:.0%} flagged OOD"
        print(f"- {name} ({info['path']}): r with θ* {r}; {flagged}")
    head = ["posterior", "dims", "mode", "ood", "form weight", "no reward"] + [f"best-of-G, {j}" for j in judges] + \
        [f"ρ, {j}" for j in judges]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in table["rewards"]:
        print("| " + " | ".join([row["posterior"], row["dims"], row["mode"], row["ood"],
                                 f"{row.get('form_weight', 0.0):g}", f"{row['reward_none_fraction']:.0%}"]
                                + [cell(row[f"best_of_group_gain/{j}"]) for j in judges]
                                + [cell(row[f"within_group_spearman/{j}"]) for j in judges]) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", help="θ-prompt JSONL (brainrl theta-prompts)")
    parser.add_argument("--style", default="block", choices=["block", "headline"])
    parser.add_argument("--completions", help="read a run's completions.jsonl instead of generating (with --prompts: "
                                              "θ* looked up there, else parsed from the prompt)")
    parser.add_argument("--steps", type=int, nargs="*", help="with --completions: only these training steps")
    parser.add_argument("--rescore", action="store_true",
                        help="with --completions: rank by --posterior's 6-dim reward, not the run's logged reward")
    parser.add_argument("--n-prompts", type=int, default=24)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--posterior", required=True)
    parser.add_argument("--second-posterior", required=True)
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--noise-seed", type=int, default=1)
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=POSTERIOR",
                        help="also score candidate rewards decoded by this posterior (repeatable): every dims set "
                             "(all six; valence+arousal+dominance; valence+dominance), mode (mean, expected) and, where "
                             "the posterior has OOD statistics, OOD action (log, downweight, none)")
    parser.add_argument("--ood-threshold", type=float, default=0.05)
    parser.add_argument("--form-weight", type=float, action="append", default=[], metavar="W",
                        help="also score every candidate as reward + W * headline form (rewards/headline_form.py: 0 for "
                             "one line of --form-min-words..--form-max-words words, -1 otherwise); repeatable")
    parser.add_argument("--save-scores", metavar="NPZ", help="with --candidate: also save every completion's "
                        "candidate rewards, posterior means, judge distances, θ* and group (to combine candidates later)")
    parser.add_argument("--form-min-words", type=int, default=3)
    parser.add_argument("--form-max-words", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from brainrl.report.stats import spearman
    from brainrl.sbi.inference.decode import campaign_text
    from brainrl.sbi.inference.estimator import Posterior
    from brainrl.sbi.judges.text import TextJudge
    from brainrl.sbi.simulation.prior import PARAM_NAMES
    from brainrl.sbi.theta.prompts import THETA_COLUMN, read_theta_prompts
    from brainrl.sbi.theta.reward import ThetaTargetReward

    started = time.perf_counter()
    if args.completions:
        from brainrl.sbi.simulation.procedural import parse_request

        rows = [json.loads(line) for line in Path(args.completions).read_text().splitlines() if line.strip()]
        if args.steps:
            rows = [r for r in rows if r["step"] in set(args.steps)]
        keys = sorted({(r["step"], r["prompt"]) for r in rows})
        key_index = {k: i for i, k in enumerate(keys)}
        texts = [r["completion"] for r in rows]
        index = np.array([key_index[(r["step"], r["prompt"])] for r in rows])
        if args.prompts:  # θ* of each prompt from its θ-prompt file (headline prompts show θ* in words only)
            from brainrl.sbi.theta.prompts import prompt_key, prompt_table

            table = prompt_table(read_theta_prompts(args.prompts))
            targets = np.stack([table[prompt_key(k[1])][THETA_COLUMN] for k in keys])
        else:  # block prompts state θ* as numbers
            targets = np.stack([parse_request(k[1])[0] for k in keys])
    else:
        prompt_rows = read_theta_prompts(args.prompts)[: args.n_prompts]
        texts, index = generate(prompt_rows, args.style, args.group, args.temperature, args.max_new_tokens,
                                args.seed)
        targets = np.array([r[THETA_COLUMN] for r in prompt_rows])
    generated_s = time.perf_counter() - started
    theta = targets[index]
    reward = ThetaTargetReward(args.posterior, mode="expected", n_samples=args.n_samples, ood="log")
    maps = reward.maps(texts)
    from brainrl.brain.base import BrainMap

    ok = np.array([isinstance(m, BrainMap) for m in maps])
    good = [m for m, f in zip(maps, ok) if f]
    n, d = len(texts), len(PARAM_NAMES)

    def decode(posterior, seed):
        means = np.full((n, d), np.nan)
        expected = np.full(n, np.nan)
        inputs = posterior.prepare(good)
        draws = np.asarray(posterior.sample(inputs, args.n_samples, seed=seed))
        means[ok] = draws.mean(axis=1)
        expected[ok] = -np.mean(np.sum((draws - theta[ok][:, None, :]) ** 2, axis=2), axis=1)
        return means, expected

    train_post = Posterior.load(args.posterior)
    second = Posterior.load(args.second_posterior)
    train_mean, train_reward = decode(train_post, 0)
    _, train_reward_noise = decode(train_post, args.noise_seed)
    second_mean, second_expected = decode(second, 0)
    spoken = [campaign_text(t) or "" for t in texts]
    judge_est = np.full((n, d), np.nan)
    has = np.array([bool(s) for s in spoken])
    judge_est[has] = TextJudge.load().predict([s for s in spoken if s])
    try:  # OOD statistics beside the posterior (brainrl ood-fit); a posterior without them is still probed
        flagged = float(np.mean(reward.ood_reference.score(train_post.summaries(train_post.prepare(good)), 0.05).flagged))
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"no OOD statistics for {args.posterior}: {err}")
        flagged = None

    ranking = train_reward  # the 6-dim E_q reward; a run's completions carry the reward its trainer used
    if args.completions and not args.rescore and any(r.get("reward") is not None for r in rows):
        # a failed reward (None: the trainer left that completion out) ranks nowhere
        ranking = np.array([np.nan if r.get("reward") is None else float(r["reward"]) for r in rows])
    judges = {"training posterior": train_mean, "second posterior": second_mean, "text judge": judge_est}
    dist = {name: -np.sum((est - theta) ** 2, axis=1) for name, est in judges.items()}
    report: dict = {"n_completions": n, "n_prompts": int(index.max() + 1), "failed_maps": int((~ok).sum()),
                    "ood_flagged": flagged, "source": args.completions or args.prompts,
                    "style": args.style, "temperature": args.temperature, "seconds": {},
                    "ranking_reward": "the run's logged reward" if ranking is not train_reward else "6-dim E_q reward"}
    report["fidelity_r"] = {name: {p: float(np.corrcoef(est[ok & has, j], theta[ok & has, j])[0, 1])
                                   for j, p in enumerate(PARAM_NAMES)} for name, est in judges.items()}
    groups = [np.flatnonzero(index == g) for g in range(int(index.max()) + 1)]
    report["within_group_spearman_reward_vs"] = {
        name: _t_interval(np.array([spearman(ranking[g], dist[name][g]) for g in groups]))
        for name in judges}
    # per dimension: the training posterior's |error| ranking vs each independent judge's, within groups
    report["within_group_spearman_abs_error_per_dim"] = {
        name: {p: float(np.nanmean([spearman(-np.abs(train_mean[g, j] - theta[g, j]),
                                               -np.abs(judges[name][g, j] - theta[g, j])) for g in groups]))
               for j, p in enumerate(PARAM_NAMES)} for name in ("second posterior", "text judge")}
    report["reward_sd_within_group"] = float(np.nanmean([np.nanstd(train_reward[g]) for g in groups]))
    report["ranking_reward_sd_within_group"] = float(np.nanmean([np.nanstd(ranking[g]) for g in groups]))
    report["reward_sd_redraw_noise"] = float(np.nanstd(train_reward - train_reward_noise) / np.sqrt(2))
    picked = [(g[np.nanargmax(ranking[g])], g) for g in groups if np.isfinite(ranking[g]).any()]  # (best, group)
    report["best_of_group_minus_mean"] = {
        name: _t_interval(np.array([dist[name][b] - np.nanmean(dist[name][g]) for b, g in picked]))
        for name in judges}
    report["best_of_group_minus_mean_per_dim_sq_error"] = {
        name: {p: _t_interval(np.array([np.nanmean((est[g, j] - theta[g, j]) ** 2)
                                        - (est[b, j] - theta[b, j]) ** 2 for b, g in picked]))["mean"]
               for j, p in enumerate(PARAM_NAMES)} for name, est in judges.items()}
    report["mean_distance"] = {name: float(np.nanmean(v)) for name, v in dist.items()}
    report["prior_mean_distance"] = float(-np.mean(np.sum((0.5 - theta) ** 2, axis=1)))
    if args.candidate:  # the judges as validate scores them: E_q distance for the posterior, point for the text
        judge_dist = {"disjoint posterior": second_expected, "text judge": dist["text judge"]}
        form = None
        if args.form_weight:
            from brainrl.rewards.form import HeadlineForm

            form = np.array(HeadlineForm(args.form_min_words, args.form_max_words)(completions=texts))
            report["headline_form_ok"] = float(np.mean(form == 0.0))
        scores = {} if args.save_scores else None
        report["candidates"] = candidate_table(args.candidate, good, ok, theta, groups, judge_dist,
                                               {"disjoint posterior": second_mean, "text judge": judge_est},
                                               args.n_samples, args.ood_threshold, form, args.form_weight, scores)
        if scores is not None:
            np.savez(args.save_scores, theta=theta, group=index, texts=np.array(texts),
                     judge_disjoint=judge_dist["disjoint posterior"], judge_text=judge_dist["text judge"],
                     judge_text_estimate=judge_est, judge_disjoint_mean=second_mean,
                     **({"form": form} if form is not None else {}), **scores)
    report["seconds"] = {"generation": round(generated_s, 1), "total": round(time.perf_counter() - started, 1)}
    report["examples"] = [{"prompt_index": int(index[i]), "text": texts[i], "reward": float(train_reward[i])}
                          for i in range(min(n, 16))]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("examples", "candidates")}, indent=1))
    if args.candidate:
        print_candidates(report["candidates"], ("disjoint posterior", "text judge"))


if __name__ == "__main__":
    main()
