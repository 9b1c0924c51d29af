"""`brainrl validate` (θ validator: base vs tuned), `brainrl ood-fit` (OOD statistics beside a posterior)
and `brainrl theta-prompts` (write a (θ*, topic) prompt dataset)."""

from __future__ import annotations

import argparse
import json

from brainrl.cli.common import folder_arg


def _validate(args: argparse.Namespace) -> int:
    from brainrl.brain.pipeline import PipelineConfig
    from brainrl.cli.common import parse_key_values
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.sbi.theta.validate import ValidateConfig, print_validation, validate

    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    pipeline = None  # the posterior's campaign pipeline, unless the brain pipeline is given explicitly
    if args.model or args.speech or args.model_arg or args.cache_dir is not None:
        pipeline = PipelineConfig(speech=args.speech or "espeak", model=args.model or "synthetic",
                                  model_kwargs=parse_key_values(args.model_arg), cache_dir=args.cache_dir)
    config = ValidateConfig(n=args.n, seed=args.seed, completions_per_prompt=args.completions_per_prompt,
                            sampling=sampling, pipeline=pipeline, n_samples=args.n_samples,
                            ood_threshold=args.ood_threshold, text_format=args.text_format,
                            prompt_style=args.prompt_style)
    if args.topics:
        config.topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    result = validate(args.posterior, args.base, args.out, adapter=args.adapter, config=config,
                      second_posterior=args.second_posterior, judge=None if args.no_judge else (args.judge or "packaged"))
    print_validation(result)
    print(f"results: {args.out}/validation.json, figures: {', '.join(result['figures'].values())}")
    return 0


def _ood_fit(args: argparse.Namespace) -> int:
    from brainrl.sbi.inference.ood import fit_ood

    reference = fit_ood(args.posterior, args.data or None, args.posterior, folds=args.folds, seed=args.seed)
    print(json.dumps({"saved": f"{args.posterior}/ood.npz", **reference.meta,
                      "reference_median": float(sorted(reference.reference)[len(reference.reference) // 2])},
                     indent=1, default=str))
    return 0


def _theta_prompts(args: argparse.Namespace) -> int:
    from brainrl.sbi.theta.prompts import build_theta_prompts, write_theta_prompts
    from brainrl.sbi.simulation.topics import TOPICS

    topics = [t.strip() for t in args.topics.split(",")] if args.topics else list(TOPICS)
    rows = build_theta_prompts(args.n, args.seed, topics, args.style)
    path = write_theta_prompts(rows, args.out, args.text_out)
    print(f"wrote {len(rows)} rows to {path}" + (f" and {args.text_out}" if args.text_out else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    val = subparsers.add_parser("validate", help="does a generator hit requested θ*? base vs base+adapter, decoded "
                                                 "by an SBI posterior, with OOD checks")
    val.add_argument("--posterior", required=True, help="posterior folder (brainrl sbi fit --out)")
    val.add_argument("--base", required=True, help="generator: smollm2 (embedded), a hub id, a folder or a .gguf")
    val.add_argument("--adapter", help="LoRA adapter folder (a run's adapter/); omitted = base only")
    val.add_argument("--n", type=int, default=64, help="held-out (θ*, topic) prompts")
    val.add_argument("--seed", type=int, default=1000, help="θ* draws and sampling seeds (training prompts use 0)")
    val.add_argument("--topics", help="comma-separated topics (default: the ten of the paper)")
    val.add_argument("--prompt-style", default="block", choices=["block", "headline"],
                     help="block: five numbered headlines, θ* as numbers; headline: one headline, θ* in words after "
                          "worked examples (the SmolLM2 campaign's prompt; recipes/offline_theta_headline_*.yaml)")
    val.add_argument("--completions-per-prompt", type=int, default=1)
    val.add_argument("--n-samples", type=int, default=200, help="posterior draws per completion")
    val.add_argument("--ood-threshold", type=float, default=0.05, help="flag items with OOD p-value below this")
    val.add_argument("--temperature", type=float, default=1.0)
    val.add_argument("--top-p", type=float, default=1.0)
    val.add_argument("--max-new-tokens", type=int, default=160)
    val.add_argument("--out", required=True, type=folder_arg,
                     help="folder for validation.json, completions.jsonl and figures")
    val.add_argument("--second-posterior", action="append",
                     help="a posterior fitted on a disjoint campaign: an independent decoder; repeat it (e.g. fits "
                          "with other --seed) to judge by their pooled draws, each fit also reported alone")
    val.add_argument("--judge", help="text-judge calibration (default: the packaged one)")
    val.add_argument("--no-judge", action="store_true", help="skip the text judge")
    val.add_argument("--text-format", default="campaign", choices=["campaign", "raw"],
                     help="speak completions as the campaign spoke its texts (default) or as generated")
    group = val.add_argument_group("brain pipeline (default: the posterior's campaign pipeline, from its card; "
                                   "a different one is refused)")
    group.add_argument("--model", default=None)
    group.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    group.add_argument("--speech", default=None)
    group.add_argument("--cache-dir", default=None)
    val.set_defaults(func=_validate)

    ood = subparsers.add_parser("ood-fit", help="fit OOD statistics of a posterior's summaries and save them beside it")
    ood.add_argument("--posterior", required=True)
    ood.add_argument("--data", action="append", help="campaign folder, repeatable for a posterior fitted on several "
                                                    "(default: the ones recorded in posterior.json)")
    ood.add_argument("--folds", type=int, default=5, help="cross-fitting folds when the campaign has no held-out split")
    ood.add_argument("--seed", type=int, default=0)
    ood.set_defaults(func=_ood_fit)

    tp = subparsers.add_parser("theta-prompts", help="write a (θ*, topic) prompt dataset (JSONL + plain prompt file)")
    tp.add_argument("--n", type=int, required=True)
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--topics", help="comma-separated topics (default: the ten of the paper)")
    tp.add_argument("--style", default="block", choices=["block", "headline"],
                    help="block: five numbered headlines, θ* as numbers; headline: one headline, θ* in words (level "
                         "centres) after worked examples; its system prompt is theta_prompts.system_prompt_for")
    tp.add_argument("--out", required=True, help="JSONL with prompt, theta_target, topic")
    tp.add_argument("--text-out", help="also write the prompts one per line (the trainers' data.train format)")
    tp.set_defaults(func=_theta_prompts)
