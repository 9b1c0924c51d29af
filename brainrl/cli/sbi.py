"""`brainrl simulate`, `brainrl sbi fit`, `brainrl sbi diagnose`: campaigns, posterior, diagnostics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from brainrl.cli.common import folder_arg, positive_int

log = logging.getLogger(__name__)


def _simulate(args: argparse.Namespace) -> int:
    from brainrl.sbi.simulation.campaign import Campaign, load_campaign_config, merge_shards, truncate_campaign

    config = load_campaign_config(args.recipe)
    if args.out:
        config.out_dir = args.out
    if args.n_items is not None:
        config.n_items = args.n_items
    if args.merge_only:
        if args.n_items is not None:  # a campaign stopped early: keep its first n_items (finished shards)
            truncate_campaign(config.out_dir, args.n_items)
        print(f"merged dataset: {merge_shards(config.out_dir)}")
        return 0
    from tqdm import tqdm

    with tqdm(total=config.n_items, desc="simulating", unit="item") as bar:
        result = Campaign(config).run(on_batch=lambda last_id: bar.update(min(config.batch_size, bar.total - bar.n)))
    print(json.dumps({"out_dir": str(result.out_dir), "shards_written": len(result.shards_written),
                      "shards_skipped (already done)": len(result.shards_skipped), "failed_items": result.n_failed,
                      "dataset": str(result.dataset_dir) if result.dataset_dir else None,
                      "seconds": round(result.seconds, 1)}, indent=1))
    if result.dataset_dir:
        print(f"next: brainrl sbi fit --data {result.out_dir} --out {Path(result.out_dir).parent / 'posterior'}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from brainrl.sbi.simulation.campaign import combine_campaign_arrays
    from brainrl.configs import load_yaml
    from brainrl.sbi.inference.estimator import EstimatorConfig, fit_posterior

    config = load_yaml(EstimatorConfig, args.recipe, where="EstimatorConfig") if args.recipe else EstimatorConfig()
    if args.max_epochs:
        config.max_epochs = args.max_epochs
    if args.min_steps is not None:
        config.min_steps = args.min_steps
    if args.seed is not None:
        config.seed = args.seed
    data = args.data[0] if len(args.data) == 1 else args.data
    result = fit_posterior(combine_campaign_arrays(args.data), args.out, config, data_dir=data)
    print(json.dumps({"posterior": str(result.out_dir), "train/val/test": [result.n_train, result.n_val, result.n_test],
                      "epochs": result.epochs, "best_val_loss": round(result.best_val_loss, 4),
                      "seconds": round(result.seconds, 1)}, indent=1))
    print(f"next: brainrl sbi diagnose --posterior {result.out_dir} --data {' '.join(map(str, args.data))} "
          f"--out {Path(result.out_dir).parent / 'diagnose'}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from brainrl.sbi.simulation.campaign import combine_campaign_arrays
    from brainrl.sbi.inference.estimator import calibrate_posterior

    arrays = combine_campaign_arrays(args.data) if args.data else None
    result = calibrate_posterior(args.posterior, arrays, n_samples=args.n_samples)
    print(json.dumps({"spread factor": result["factor"], "validation CRPS raw": result["crps_raw"],
                      "validation CRPS calibrated": result["crps_calibrated"]}, indent=1))
    print(f"next: brainrl sbi diagnose --posterior {args.posterior} --data {' '.join(args.data or ['CAMPAIGN'])} "
          f"--out {Path(args.posterior).parent / 'diagnosis'}")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from brainrl.sbi.judges.cycle import CycleConfig
    from brainrl.sbi.diagnostics.diagnose import DiagnoseConfig, diagnose, metrics_table
    from brainrl.sbi.simulation.generators import GeneratorConfig

    cycle = None
    if args.cycle == "judge":
        cycle = "judge"
    elif args.cycle != "none":
        kwargs = json.loads(args.cycle_kwargs) if args.cycle_kwargs else None
        cycle = CycleConfig() if args.cycle == "local" and kwargs is None else CycleConfig(
            evaluator=GeneratorConfig(args.cycle, kwargs or {}))
    sampler = json.loads(args.sampler) if args.sampler else {}
    config = DiagnoseConfig(n_samples=args.n_samples, split=args.split, max_cases=args.max_cases, seed=args.seed,
                            cycle=cycle, sampler=sampler)
    report = diagnose(args.posterior, args.data, args.out, config)
    print(metrics_table(report["results"]))
    print(f"results: {args.out}/index.html (open it in a browser)")
    print(f"next:    brainrl validate --posterior {args.posterior} --base smollm2 --out {Path(args.out).parent / 'validate'}")
    return 0


def _named(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"{what} must be NAME=PATH (e.g. procedural=runs/p/posterior); got {item!r}.")
        out[name] = path
    return out


def _decode(args: argparse.Namespace) -> int:
    from brainrl.sbi.inference.decode import decode_file

    report = decode_file(args.posterior, args.file, args.out, n_samples=args.n_samples, seed=args.seed,
                         judge=args.judge)
    print(report["table"])
    print(f"report: {args.out}/decoded.json, {args.out}/decoded.png")
    return 0


def _cross(args: argparse.Namespace) -> int:
    from brainrl.sbi.diagnostics.cross_generator import cross_generator_table

    report = cross_generator_table(_named(args.posterior, "--posterior"), _named(args.data, "--data"), args.out,
                                   n_samples=args.n_samples, split=args.split, max_cases=args.max_cases,
                                   judge="packaged" if args.judge else None)
    print(report["table"])
    return 0


def _judge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from brainrl.sbi.diagnostics.fidelity import judge_campaigns
    from brainrl.sbi.judges.text import TextJudge, procedural_corpus, text_features

    out = Path(args.out)
    if args.calibrate:
        texts, theta, corpus = procedural_corpus(args.n)
        judge = TextJudge.calibrate(text_features(texts), theta, corpus=corpus)
        judge.save(out / "judge.npz")
        print(json.dumps(judge.card["cv_pearson_r"], indent=1))
    if args.data:
        report = judge_campaigns(args.data, out, args.judge_path or (out / "judge.npz" if args.calibrate else None))
        print(report["table"])
    if not args.calibrate and not args.data:
        raise ValueError("give --calibrate, --data CAMPAIGN, or both.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("simulate", help="run or resume an SBI simulation campaign from a recipe")
    sim.add_argument("--recipe", required=True, help="recipes/campaign_*.yaml")
    sim.add_argument("--out", type=folder_arg, help="override out_dir")
    sim.add_argument("--n-items", type=positive_int, help="override n_items (>= 1)")
    sim.add_argument("--merge-only", action="store_true",
                     help="only merge finished shards into out_dir/dataset; with --n-items N, a campaign stopped "
                          "early keeps its first N items (recorded in campaign.json; it can grow again)")
    sim.set_defaults(func=_simulate)

    sbi = subparsers.add_parser("sbi", help="fit and diagnose the BayesFlow posterior")
    sub = sbi.add_subparsers(dest="sbi_command", metavar="SBI_COMMAND", required=True)
    fit = sub.add_parser("fit", help="train q(θ | brain sequence) on a campaign")
    fit.add_argument("--data", required=True, action="append",
                     help="campaign folder (brainrl simulate's out_dir); repeat to fit on several campaigns that "
                          "share one projection (the paper's 'Both' model)")
    fit.add_argument("--out", required=True, type=folder_arg, help="folder for the posterior")
    fit.add_argument("--recipe", help="YAML with EstimatorConfig fields (defaults: the paper's)")
    fit.add_argument("--max-epochs", type=int)
    fit.add_argument("--min-steps", type=int, help="optimiser-step floor before early stopping (default 3000; "
                                                   "0 = the paper's epoch schedule only)")
    fit.add_argument("--seed", type=int)
    fit.set_defaults(func=_fit)

    cal = sub.add_parser("calibrate", help="(re)fit a posterior's spread calibration on its validation items "
                                           "(`sbi fit` does this itself)")
    cal.add_argument("--posterior", required=True)
    cal.add_argument("--data", action="append", help="its training campaign(s) (default: the folders in its card)")
    cal.add_argument("--n-samples", type=int, default=200)
    cal.set_defaults(func=_calibrate)

    dia = sub.add_parser("diagnose", help="recovery, Bayes RMSE, calibration, contraction vs cycle consistency")
    dia.add_argument("--posterior", required=True)
    dia.add_argument("--data", required=True, help="campaign folder; its held-out ids are used if it is the training one")
    dia.add_argument("--out", required=True, type=folder_arg, help="folder for the diagnostics report")
    dia.add_argument("--n-samples", type=int, default=500)
    dia.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    dia.add_argument("--max-cases", type=int)
    dia.add_argument("--seed", type=int, default=0)
    dia.add_argument("--cycle", default="judge", choices=["judge", "local", "openai", "none"],
                     help="text-only baseline: the offline text judge (default), an inverse LLM evaluator "
                          "(local/openai), or none")
    dia.add_argument("--cycle-kwargs", help='JSON generator settings, e.g. \'{"model": "gpt-5.4-nano"}\'')
    dia.add_argument("--sampler", help='JSON ODE settings, e.g. \'{"method": "euler", "steps": 100}\'')
    dia.set_defaults(func=_diagnose)

    dec = sub.add_parser("decode", help="decode arbitrary texts (one per line) with a posterior: table + plot")
    dec.add_argument("--posterior", required=True)
    dec.add_argument("--file", required=True, help="text file, one text per line (a headline or a block); "
                                                   "'#' lines and blank lines are skipped")
    dec.add_argument("--out", required=True, type=folder_arg)
    dec.add_argument("--n-samples", type=int, default=500)
    dec.add_argument("--seed", type=int, default=0)
    dec.add_argument("--judge", action="store_true", help="also score every text with the text judge")
    dec.set_defaults(func=_decode)

    cross = sub.add_parser("cross", help="cross-generator table: every posterior on every campaign's test ids")
    cross.add_argument("--posterior", required=True, action="append", help="NAME=FOLDER, repeatable")
    cross.add_argument("--data", required=True, action="append", help="NAME=CAMPAIGN, repeatable")
    cross.add_argument("--out", required=True, type=folder_arg)
    cross.add_argument("--n-samples", type=int, default=200)
    cross.add_argument("--split", default="auto", choices=["auto", "test", "val", "all"],
                       help="auto: a training campaign's test ids, every row of a campaign the posterior never saw")
    cross.add_argument("--max-cases", type=int, help="at most this many rows per campaign")
    cross.add_argument("--judge", action="store_true",
                       help="add the text judge's r on each campaign's texts (generator fidelity)")
    cross.set_defaults(func=_cross)

    judge = sub.add_parser("judge", help="calibrate the text judge, or measure a campaign generator's fidelity")
    judge.add_argument("--calibrate", action="store_true",
                       help="fit the de-mixing on procedural texts of known θ and write DIR/judge.npz + .json")
    judge.add_argument("--n", type=int, default=1000, help="calibration texts")
    judge.add_argument("--data", action="append", help="campaign folder: judge r of its texts against its θ")
    judge.add_argument("--judge-path", help="a calibration written by --calibrate (default: the packaged one)")
    judge.add_argument("--out", required=True, type=folder_arg)
    judge.set_defaults(func=_judge)
