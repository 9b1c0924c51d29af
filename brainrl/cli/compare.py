"""`brainrl compare`: base vs tuned generator on the same prompts, through the same brain pipeline,
written up as report.html + summary.json.

Sampling and scoring are ``brainrl.evaluation``'s (the same paired seeds, scorers and intervals as
``brainrl evaluate``: each reward, every ROI the rewards use, length); ``brainrl.report`` adds the
whole-cortex ROI statistics, figures and the HTML. Settings come from a finished run (``--run DIR``:
its run card and adapter) or are given explicitly (``--base SPEC --adapter DIR --prompts FILE``);
explicit flags override the run card.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from brainrl.cli.common import folder_arg

log = logging.getLogger(__name__)

DEFAULT_COMPLETIONS = 32
DEFAULT_SEED = 1234
SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty")


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="compare a base and a tuned generator: ROI statistics + HTML report",
                              description=__doc__)
    src = p.add_argument_group("what to compare")
    src.add_argument("--run", help="a finished `brainrl train` output_dir (run_card.json + adapter/)")
    src.add_argument("--base", help="base policy spec: smollm2, a hub id, a folder or a .gguf (default: the run's)")
    src.add_argument("--adapter", help="LoRA adapter folder (default: RUN/adapter)")
    src.add_argument("--prompts", help="prompt file, one per line (default: the run's held-out prompts)")
    src.add_argument("--system", default=None, help="system prompt (default: the run's; '' for none)")
    gen = p.add_argument_group("generation (identical for both models)")
    gen.add_argument("-n", "--completions", type=int, default=None,
                     help="completions per model, at least; ceil(n / prompts) per prompt (default: the run's eval "
                          f"settings, else {DEFAULT_COMPLETIONS})")
    gen.add_argument("--seed", type=int, default=None, help=f"sampling seed (default: the run's eval seed or {DEFAULT_SEED})")
    for name in SAMPLING_FLAGS:
        gen.add_argument(f"--{name.replace('_', '-')}", type=int if name in ("top_k", "max_new_tokens") else float,
                         default=None, help=f"override sampling.{name}")
    gen.add_argument("--batch-prompts", type=int, default=None,
                     help="prompts per generate call; batch b uses seed + b (default: the run's eval.batch_prompts, else 8)")
    gen.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    gen.add_argument("--dtype", default=None, help="policy dtype (default: the run's, else auto)")
    brain = p.add_argument_group("brain pipeline (default: the run's)")
    brain.add_argument("--model", dest="brain_model", default=None, help="brain model: synthetic, tribe, remote")
    brain.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="brain model argument")
    brain.add_argument("--speech", default=None, help="speech engine: espeak, gtts-whisperx")
    brain.add_argument("--cache-dir", default=None, help="map cache folder ('' disables)")
    brain.add_argument("--batch-size", type=int, default=32, help="texts per brain-pipeline batch")
    rep = p.add_argument_group("report")
    rep.add_argument("--out", default=None, type=folder_arg, help="output folder (default: RUN/compare, else compare/)")
    rep.add_argument("--reward", dest="rewards", action="append", default=None, metavar="FILE",
                     help="reward file to score (repeatable; default: the run's rewards)")
    rep.add_argument("--judge", dest="judges", action="append", default=[], metavar="FILE",
                     help="a file of judge callables to score besides the rewards (repeatable; see brainrl evaluate)")
    rep.add_argument("--target", default=None, help="target ROI (default: the rewards' first ROI, else broca)")
    rep.add_argument("--roi", dest="rois", action="append", default=None,
                     help="ROI to compare (repeatable; default: every preset); the rewards' ROIs are always added")
    rep.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    rep.add_argument("--n-perm", type=int, default=5000, help="permutations per test")
    rep.add_argument("--test", choices=("permutation", "welch"), default="permutation")
    rep.add_argument("--resample", choices=("auto", "prompts", "completions"), default="auto",
                     help="unit of the intervals (auto: prompts when there are >= 2; completions: CIs conditional "
                          "on these prompts)")
    rep.add_argument("--stats-seed", type=int, default=0, help="seed of the bootstrap and permutations")
    rep.add_argument("--no-surfaces", action="store_true", help="skip the surface renders (~2 s each)")
    p.set_defaults(func=run_compare)


# -- settings ---------------------------------------------------------------------------------------
@dataclass
class CompareConfig:
    """Everything that decides the completions and maps; recorded in summary.json and the report."""

    base: str
    adapter: str
    prompts: list[str]
    prompts_source: str
    prompt_columns: dict[str, list[Any]] | None
    system_prompt: str | None
    sampling: dict[str, Any]
    per_prompt: int
    seed: int
    batch_prompts: int
    pipeline: dict[str, Any]
    rewards: list[dict[str, Any]]  # RewardConfig fields, paths resolved
    generation: dict[str, Any] = field(default_factory=dict)  # DecodingConfig (speed only, not the distribution)
    target: str | None = None  # None: the rewards' first ROI, else broca
    extra_rois: list[str] = field(default_factory=list)
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    run_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def completions_per_model(self) -> int:
        return self.per_prompt * len(self.prompts)


def _base_from_adapter(adapter: Path) -> str | None:
    config = adapter / "adapter_config.json"
    if config.exists():
        return json.loads(config.read_text()).get("base_model_name_or_path")
    return None


def resolve_settings(args: argparse.Namespace) -> CompareConfig:
    """Merge the run (if any) with explicit flags; fail naming the missing piece and its flag."""
    from brainrl.cli.common import parse_key_values
    from brainrl.configs import read_prompt_rows
    from brainrl.train.evaluate import prompt_table
    from brainrl.policy.sampling import SamplingConfig
    from brainrl.train.runs import Run

    run = Run.open(args.run) if args.run else None
    recipe = run.recipe if run else None
    notes = []
    adapter = Path(args.adapter) if args.adapter else (run.adapter_dir if run else None)
    if adapter is None:
        raise ValueError("Nothing to compare: give --run RUN_DIR, or --adapter DIR (with --base and --prompts).")
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} holds no LoRA adapter (adapter_config.json); did the run finish? "
                                "Pass --adapter DIR to choose one (e.g. RUN/checkpoint-000010/adapter).")
    base = args.base or (recipe.policy.model if recipe else None) or _base_from_adapter(adapter)
    if not base:
        raise ValueError("No base model: pass --base SPEC (smollm2, a hub id, a folder or a .gguf).")

    if args.prompts:
        prompts_source = args.prompts
    elif run is not None:
        prompts_source = str(run.resolve(recipe.data.heldout))
    else:
        raise ValueError("No prompts: pass --prompts FILE (one per line) or --run with a recipe naming data.heldout.")
    given = read_prompt_rows(prompts_source)[0]
    prompts, prompt_columns = prompt_table(prompts_source)  # dataset columns (.jsonl) reach rewards and judges
    if len(prompts) != len(given):
        notes.append("duplicate prompts were merged")

    system = args.system if args.system is not None else (recipe.data.system_prompt if recipe else None)
    sampling_dict = asdict((recipe.eval.sampling or recipe.sampling) if recipe else SamplingConfig())
    if sampling_dict.get("temperature_end") is not None:
        notes.append(f"training annealed the temperature to {sampling_dict['temperature_end']}; both models are "
                     f"sampled at the starting temperature {sampling_dict.get('temperature', 1.0)}")
    sampling_dict["temperature_end"] = None
    for name in SAMPLING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            sampling_dict[name] = value
    sampling = SamplingConfig(**sampling_dict)  # validates

    if recipe is not None:  # a surrogate's teacher scores held-out completions, never the student
        from brainrl.brain.surrogate import teacher_config

        pipeline = asdict(teacher_config(recipe.brain))
    else:
        pipeline = {}
    if args.brain_model:
        pipeline["model"] = args.brain_model
        pipeline["model_kwargs"] = {}
    if args.model_arg:
        pipeline["model_kwargs"] = {**pipeline.get("model_kwargs", {}), **parse_key_values(args.model_arg)}
    if args.speech:
        pipeline["speech"] = args.speech
    if args.cache_dir is not None:
        pipeline["cache_dir"] = args.cache_dir

    if args.completions is not None:
        if args.completions < 2:
            raise ValueError(f"-n/--completions must be >= 2 (32 or more for useful intervals); got {args.completions}.")
        if args.completions < len(prompts):  # fewer completions than prompts: only the first n prompts are used
            notes.append(f"-n {args.completions} is less than the {len(prompts)} prompts: the first {args.completions} "
                         "prompts are used, one completion each")
            prompts = prompts[:args.completions]
            prompt_columns = {k: v[:args.completions] for k, v in prompt_columns.items()} if prompt_columns else None
        per_prompt = math.ceil(args.completions / len(prompts))
    elif recipe is not None:
        per_prompt = recipe.eval.per_prompt(len(prompts))
    else:
        per_prompt = math.ceil(DEFAULT_COMPLETIONS / len(prompts))
    if args.rewards:
        rewards = [{"path": path} for path in args.rewards]
    elif recipe is not None:
        rewards = [{**asdict(spec), "path": str(recipe.resolve(spec.path))} for spec in recipe.rewards]
    else:
        rewards = []
    seed = args.seed if args.seed is not None else (recipe.eval.seed if recipe else DEFAULT_SEED)
    batch_prompts = args.batch_prompts or (recipe.eval.batch_prompts if recipe else 8)
    return CompareConfig(
        base=str(base), adapter=str(adapter), prompts=prompts, prompts_source=prompts_source,
        prompt_columns=prompt_columns,
        system_prompt=system or None, sampling=asdict(sampling), per_prompt=per_prompt, seed=int(seed),
        batch_prompts=int(batch_prompts), pipeline=pipeline, rewards=rewards, target=args.target,
        extra_rois=recipe.eval.extra_rois() if recipe else [],
        generation=asdict(recipe.policy.generation) if recipe else {},
        dtype=args.dtype or (recipe.policy.dtype if recipe else "auto"), device=args.device or _default_device(),
        trust_remote_code=bool(recipe.policy.trust_remote_code) if recipe else False,
        run_dir=str(run.dir) if run else None, notes=notes,
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def predict_maps(texts: Sequence[str], pipeline, batch_size: int) -> list:
    from brainrl.cli.common import batches

    maps: list = []
    for _, batch in batches(list(texts), batch_size, "brain maps"):
        maps.extend(pipeline(list(batch)))
    return maps


def run_compare(args: argparse.Namespace) -> int:
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.cortex.rois import get_roi
    from brainrl.evaluation import default_scorers, evaluate_pair, load_pair, reward_rois
    from brainrl.evaluation.output import print_table
    from brainrl.policy.sampling import DecodingConfig, SamplingConfig
    from brainrl.report import (ModelOutputs, ReportConfig, StatsConfig, build_comparison, default_roi_names, read_metrics,
                                write_report)
    from brainrl.rewards import load_reward_file, load_rewards
    from brainrl.train.runs import Run

    settings = resolve_settings(args)
    pipeline_config = PipelineConfig(**settings.pipeline)  # fails naming an unknown model or speech engine
    rewards, _ = load_rewards(settings.rewards, pipeline_config)
    used = reward_rois(rewards)
    target = get_roi(settings.target) if settings.target else (used[0] if used else get_roi("broca"))
    judges = [fn for path in args.judges for fn in load_reward_file(path)]
    scorers = default_scorers(rewards, judges=judges, extra_rois=[target, *settings.extra_rois], pipeline=pipeline_config)
    out = Path(args.out) if args.out else (Path(settings.run_dir) / "compare" if settings.run_dir else Path("compare"))

    model, tokenizer, dropped = load_pair(settings.base, settings.adapter, dtype=settings.dtype, device=settings.device,
                                          trust_remote_code=settings.trust_remote_code)
    if dropped:
        settings.notes.append(f"the model's own sampling defaults were dropped: {dropped}")
    print(f"generating {settings.completions_per_model} completions per model on {len(settings.prompts)} prompt(s) "
          f"({settings.prompts_source}), seed {settings.seed}")
    evaluation = evaluate_pair(model, tokenizer, settings.prompts, scorers, sampling=SamplingConfig(**settings.sampling),
                               per_prompt=settings.per_prompt, seed=settings.seed, batch_prompts=settings.batch_prompts,
                               system=settings.system_prompt, generation=DecodingConfig(**settings.generation),
                               prompt_columns=settings.prompt_columns)
    del model
    pipeline = BrainPipeline.shared(pipeline_config)  # the maps the scorers predicted are in its cache
    prompts_of = evaluation.samples.prompts_of()
    outputs = {label: ModelOutputs(label, evaluation.samples.texts[label], prompts_of,
                                   predict_maps(evaluation.samples.texts[label], pipeline, args.batch_size))
               for label in ("base", "tuned")}
    rois = default_roi_names(target) if args.rois is None else [get_roi(r) for r in args.rois]
    rois += [r for r in used if r.name not in {x.name for x in rois}]  # every region the rewards read
    report_config = ReportConfig(target=target, rois=rois, stats=StatsConfig(
        n_boot=args.n_boot, n_perm=args.n_perm, test=args.test, resample=args.resample, seed=args.stats_seed))
    from tqdm.auto import tqdm

    stages = tqdm(total=2, desc="report: statistics (bootstrap, permutations)", unit="stage")
    comparison = build_comparison(outputs["base"], outputs["tuned"], report_config)
    stages.update(1)
    stages.set_description("report: figures and HTML")
    run = Run.open(settings.run_dir) if settings.run_dir else None
    record = evaluation.to_dict()
    record_settings = {**asdict(settings), "target": target.name, "brain_pipeline": pipeline.describe()}
    record_settings.pop("prompts")  # listed separately in the report and summary
    record_settings.pop("prompt_columns")
    paths = write_report(comparison, out, run_card=run.card if run else None,
                         metrics=read_metrics(run.metrics_path) if run else [], settings=record_settings,
                         evaluation=record, surfaces=not args.no_surfaces)
    stages.update(1)
    stages.close()
    print_table(record)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    for sentence in summary["verdict"]:
        print(" -", sentence)
    print(f"results: {paths['report']} (open it in a browser) and {paths['summary']}")
    failed = summary["completions"]["base"]["failed"] + summary["completions"]["tuned"]["failed"]
    if failed:
        print(f"note: {failed} completion(s) had no brain map; see the report's list of failures")
    return 0
