"""`brainrl compare`: base vs tuned generator on the same prompts, through the same brain pipeline,
written up as report.html + summary.json (brainrl.report does the statistics and the writing).

Settings come from a finished run (``--run DIR``: its run card and adapter) or are given explicitly
(``--base SPEC --adapter DIR --prompts FILE``); explicit flags override the run card.
"""

from __future__ import annotations

import argparse
import json
import logging
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
    gen.add_argument("-n", "--completions", type=int, default=DEFAULT_COMPLETIONS,
                     help=f"completions per model, spread evenly over the prompts (default {DEFAULT_COMPLETIONS})")
    gen.add_argument("--seed", type=int, default=None, help=f"sampling seed (default: the run's eval seed or {DEFAULT_SEED})")
    for name in SAMPLING_FLAGS:
        gen.add_argument(f"--{name.replace('_', '-')}", type=int if name in ("top_k", "max_new_tokens") else float,
                         default=None, help=f"override sampling.{name}")
    gen.add_argument("--gen-batch-size", type=int, default=16, help="completions per generate call")
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
    rep.add_argument("--target", default=None, help="target ROI (default: the run's reward ROI, else broca)")
    rep.add_argument("--roi", dest="rois", action="append", default=None,
                     help="ROI to compare (repeatable; default: every preset)")
    rep.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates")
    rep.add_argument("--n-perm", type=int, default=5000, help="permutations per test")
    rep.add_argument("--test", choices=("permutation", "welch"), default="permutation")
    rep.add_argument("--resample", choices=("auto", "prompts", "completions"), default="auto",
                     help="bootstrap unit (auto: whole prompts when there are >= 8)")
    rep.add_argument("--stats-seed", type=int, default=0, help="seed of the bootstrap and permutations")
    rep.add_argument("--no-surfaces", action="store_true", help="skip the surface renders (~2 s each)")
    p.set_defaults(func=run_compare)


# -- settings ---------------------------------------------------------------------------------------
@dataclass
class CompareSettings:
    """Everything that decides the completions and maps; recorded in summary.json and the report."""

    base: str
    adapter: str
    prompts: list[str]
    prompts_source: str
    system_prompt: str | None
    sampling: dict[str, Any]
    completions_per_model: int
    seed: int
    pipeline: dict[str, Any]
    target: str
    dtype: str = "auto"
    device: str = "cpu"
    trust_remote_code: bool = False
    run_dir: str | None = None
    notes: list[str] = field(default_factory=list)


def _get(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; blank lines and ``#`` comments skipped (the recipes' format)."""
    if not path.exists():
        raise FileNotFoundError(f"Prompt file {str(path)!r} not found; pass --prompts FILE (one prompt per line).")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"Prompt file {path} has no prompts.")
    return prompts


def _locate(relative: str, card: dict[str, Any], run_dir: Path | None) -> Path:
    """A path named in a recipe: as given, else beside the recipe file or its parent, else in the run."""
    candidate = Path(relative).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    bases = []
    if card.get("recipe_path"):
        bases += [Path(card["recipe_path"]).parent, Path(card["recipe_path"]).parent.parent]
    if run_dir is not None:
        bases.append(run_dir)
    for base in bases:
        if (base / candidate).exists():
            return base / candidate
    return candidate


def _base_from_adapter(adapter: Path) -> str | None:
    config = adapter / "adapter_config.json"
    if config.exists():
        return json.loads(config.read_text()).get("base_model_name_or_path")
    return None


def _target_from_card(card: dict[str, Any]) -> str | None:
    roi = _get(card, "recipe", "eval", "roi")
    if roi:
        return roi
    for reward in card.get("rewards") or []:
        name = _get(reward, "roi", "name")
        if name:
            return name
    return None


def resolve_settings(args: argparse.Namespace) -> CompareSettings:
    """Merge the run card (if any) with explicit flags; fail naming the missing piece and its flag."""
    from brainrl.cli.common import parse_key_values
    from brainrl.policy.sampling import SamplingConfig

    card: dict[str, Any] = {}
    run_dir = Path(args.run) if args.run else None
    notes = []
    if run_dir is not None:
        path = run_dir / "run_card.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: --run takes the output_dir of a `brainrl train` run.")
        card = json.loads(path.read_text(encoding="utf-8"))
    recipe = card.get("recipe") or {}

    adapter = Path(args.adapter) if args.adapter else (run_dir / "adapter" if run_dir else None)
    if adapter is None:
        raise ValueError("Nothing to compare: give --run RUN_DIR, or --adapter DIR (with --base and --prompts).")
    if not (adapter / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} holds no LoRA adapter (adapter_config.json); did the run finish? "
                                "Pass --adapter DIR to choose one (e.g. RUN/checkpoint-000010/adapter).")
    base = args.base or _get(recipe, "policy", "model") or _base_from_adapter(adapter)
    if not base:
        raise ValueError("No base model: pass --base SPEC (smollm2, a hub id, a folder or a .gguf).")

    if args.prompts:
        prompts_source = args.prompts
        prompts = read_prompt_file(Path(args.prompts))
    else:
        listed = _get(recipe, "data", "eval_prompts")
        heldout = _get(recipe, "data", "heldout")
        if isinstance(listed, list) and listed:
            prompts, prompts_source = [str(p) for p in listed], "run card: data.eval_prompts"
        elif isinstance(listed, str) or heldout:
            located = _locate(listed if isinstance(listed, str) else heldout, card, run_dir)
            prompts, prompts_source = read_prompt_file(located), str(located)
        else:
            raise ValueError("No prompts: pass --prompts FILE (one per line) or --run with a recipe naming "
                             "data.heldout.")
    if len(set(prompts)) != len(prompts):
        notes.append("duplicate prompts were merged")
        prompts = list(dict.fromkeys(prompts))

    system = args.system if args.system is not None else _get(recipe, "data", "system_prompt")
    sampling_dict = _get(recipe, "eval", "sampling") or card.get("sampling") or _get(recipe, "sampling") or {}
    sampling_dict = {k: v for k, v in dict(sampling_dict).items() if k in SamplingConfig.__dataclass_fields__}
    if sampling_dict.get("temperature_end") is not None:
        notes.append(f"training annealed the temperature to {sampling_dict['temperature_end']}; both models are "
                     f"sampled at the starting temperature {sampling_dict.get('temperature', 1.0)}")
    sampling_dict["temperature_end"] = None
    for name in SAMPLING_FLAGS:
        value = getattr(args, name)
        if value is not None:
            sampling_dict[name] = value
    sampling = SamplingConfig(**sampling_dict)  # validates

    pipeline = dict(recipe.get("brain") or {})
    if args.brain_model:
        pipeline["model"] = args.brain_model
        pipeline["model_kwargs"] = {}
    if args.model_arg:
        pipeline["model_kwargs"] = {**pipeline.get("model_kwargs", {}), **parse_key_values(args.model_arg)}
    if args.speech:
        pipeline["speech"] = args.speech
    if args.cache_dir is not None:
        pipeline["cache_dir"] = args.cache_dir

    if args.completions < 2:
        raise ValueError(f"-n/--completions must be >= 2 (32 or more for useful intervals); got {args.completions}.")
    if args.completions < len(prompts):  # fewer completions than prompts: only the first n prompts are used
        notes.append(f"-n {args.completions} is less than the {len(prompts)} prompts: the first {args.completions} "
                     "prompts are used, one completion each")
        prompts = prompts[:args.completions]
    seed = args.seed if args.seed is not None else (_get(recipe, "eval", "seed") or DEFAULT_SEED)
    device = args.device or _default_device()
    return CompareSettings(
        base=str(base), adapter=str(adapter), prompts=prompts, prompts_source=prompts_source, system_prompt=system or None,
        sampling=asdict(sampling), completions_per_model=args.completions, seed=int(seed), pipeline=pipeline,
        target=args.target or _target_from_card(card) or "broca", dtype=args.dtype or _get(recipe, "policy", "dtype")
        or "auto", device=device, trust_remote_code=bool(_get(recipe, "policy", "trust_remote_code")),
        run_dir=str(run_dir) if run_dir else None, notes=notes,
    )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# -- generation ------------------------------------------------------------------------------------
def completions_per_prompt(n: int, n_prompts: int) -> list[int]:
    """``n`` completions spread over the prompts as evenly as possible (the first prompts get the extra)."""
    return [n // n_prompts + (1 if i < n % n_prompts else 0) for i in range(n_prompts)]


def generate_both(model, tokenizer, settings: CompareSettings, batch_size: int = 16) -> dict[str, tuple[list, list]]:
    """(texts, prompts) for the tuned model and for the base (the same PEFT model with its adapter
    disabled), drawing each prompt's completions with the same seeds for both."""
    from tqdm.auto import tqdm

    from brainrl.policy.sampling import SamplingConfig, sample_completions

    sampling = SamplingConfig(**settings.sampling)
    counts = completions_per_prompt(settings.completions_per_model, len(settings.prompts))
    out: dict[str, tuple[list, list]] = {"base": ([], []), "tuned": ([], [])}
    jobs = [(i, prompt, start, min(batch_size, count - start))
            for i, (prompt, count) in enumerate(zip(settings.prompts, counts)) for start in range(0, count, batch_size)]
    for i, prompt, start, size in tqdm(jobs, desc="generate", unit="batch", disable=len(jobs) < 2):
        seed = settings.seed + 10_000 * i + start  # one seed per (prompt, chunk), shared by both models
        for label in ("tuned", "base"):
            kwargs = dict(num_completions=size, system=settings.system_prompt, seed=seed)
            if label == "base":
                with model.disable_adapter():
                    samples = sample_completions(model, tokenizer, [prompt], sampling, **kwargs)
            else:
                samples = sample_completions(model, tokenizer, [prompt], sampling, **kwargs)
            out[label][0].extend(samples.texts)
            out[label][1].extend(samples.prompts)
    return out


def load_models(settings: CompareSettings):
    """The base policy with the adapter attached (PEFT); ``disable_adapter()`` gives the base back."""
    from peft import PeftModel

    from brainrl.policy import load_policy, neutralise_generation_config

    model, tokenizer = load_policy(settings.base, settings.dtype, settings.device,
                                   trust_remote_code=settings.trust_remote_code)
    dropped = neutralise_generation_config(model, tokenizer)
    if dropped:
        settings.notes.append(f"the model's own sampling defaults were dropped: {dropped}")
    model = PeftModel.from_pretrained(model, settings.adapter).to(settings.device).eval()
    return model, tokenizer


def predict_maps(texts: Sequence[str], pipeline, batch_size: int) -> list:
    from brainrl.cli.common import batches

    maps: list = []
    for _, batch in batches(list(texts), batch_size, "brain maps"):
        maps.extend(pipeline(list(batch)))
    return maps


def run_compare(args: argparse.Namespace) -> int:
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.report import ModelOutputs, ReportConfig, StatsConfig, build_comparison, read_metrics, write_report

    settings = resolve_settings(args)
    pipeline_config = PipelineConfig(**settings.pipeline)  # fails naming an unknown model or speech engine
    report_config = ReportConfig(target=settings.target, rois=args.rois, stats=StatsConfig(
        n_boot=args.n_boot, n_perm=args.n_perm, test=args.test, resample=args.resample, seed=args.stats_seed))
    out = Path(args.out) if args.out else (Path(settings.run_dir) / "compare" if settings.run_dir else Path("compare"))

    model, tokenizer = load_models(settings)
    print(f"generating {settings.completions_per_model} completions per model on {len(settings.prompts)} prompt(s) "
          f"({settings.prompts_source}), seed {settings.seed}")
    generated = generate_both(model, tokenizer, settings, args.gen_batch_size)
    del model
    pipeline = BrainPipeline(pipeline_config)
    outputs = {}
    for label in ("base", "tuned"):
        texts, prompts = generated[label]
        outputs[label] = ModelOutputs(label, texts, prompts, predict_maps(texts, pipeline, args.batch_size))
    comparison = build_comparison(outputs["base"], outputs["tuned"], report_config)
    card = None
    metrics: list = []
    if settings.run_dir:
        card = json.loads((Path(settings.run_dir) / "run_card.json").read_text(encoding="utf-8"))
        metrics = read_metrics(Path(settings.run_dir) / "metrics.jsonl")
    record_settings = {**asdict(settings), "brain_pipeline": pipeline.describe()}
    record_settings.pop("prompts")  # listed separately in the report and summary
    paths = write_report(comparison, out, run_card=card, metrics=metrics, settings=record_settings,
                         surfaces=not args.no_surfaces)
    summary = json.loads(paths["summary"].read_text(encoding="utf-8"))
    for sentence in summary["verdict"]:
        print(" -", sentence)
    print(f"wrote {paths['report']} and {paths['summary']}")
    failed = summary["completions"]["base"]["failed"] + summary["completions"]["tuned"]["failed"]
    if failed:
        print(f"note: {failed} completion(s) had no brain map; see the report's list of failures")
    return 0
