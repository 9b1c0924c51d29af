"""``brainrl distill``: fit a surrogate student to a recipe's brain pipeline (the teacher).

Training texts come from the recipe's base policy (``--per-prompt`` completions of each training prompt),
from text files, from runs' ``completions.jsonl`` or from SBI campaigns; held-out texts from the base
policy on the recipe's held-out prompts (or ``--heldout-texts``). The teacher maps them (its map cache
answers every text it has seen); the student, its card and a fidelity table land in ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SAMPLES_FILE = "texts_{split}.jsonl"


def register(subparsers) -> None:
    p = subparsers.add_parser("distill", help="distil a fast surrogate student from a recipe's brain model")
    p.add_argument("--recipe", required=True, help="recipe whose brain: section is the teacher (and whose policy "
                   "and prompts give the texts)")
    p.add_argument("--out", required=True, help="folder for student.npz, card.json and the sampled texts")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. --set brain.model_kwargs.seed=1")
    p.add_argument("--per-prompt", type=int, default=None,
                   help="base-policy completions per training prompt (default 12; 0 without other data is an error)")
    p.add_argument("--heldout-per-prompt", type=int, default=4,
                   help="base-policy completions per held-out prompt for the fidelity check (default 4)")
    p.add_argument("--texts", action="append", default=[], metavar="FILE",
                   help="extra training texts: one per line, a .json list or .jsonl with 'text' (repeatable)")
    p.add_argument("--completions", action="append", default=[], metavar="JSONL",
                   help="a run's completions.jsonl as training texts (repeatable)")
    p.add_argument("--campaign", action="append", default=[], metavar="DIR",
                   help="an SBI campaign's texts (repeatable)")
    p.add_argument("--heldout-texts", default=None, metavar="FILE", help="held-out texts instead of policy samples")
    p.add_argument("--k", type=int, default=64, help="PCA components of the time-averaged maps (default 64)")
    p.add_argument("--encoder", default="static", choices=("static", "sentence"),
                   help="text features: static (fast) or + a MiniLM sentence embedding (sentence-transformers)")
    p.add_argument("--embedding-dims", type=int, default=16,
                   help="principal directions kept of each embedding block (default 16; 0 keeps all 384)")
    p.add_argument("--seed", type=int, default=0, help="sampling and PCA seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads for sampling")
    p.set_defaults(func=run_distill)


def sample_policy_texts(recipe, prompts: list[str], per_prompt: int, seed: int, batch_prompts: int = 8
                        ) -> list[dict[str, Any]]:
    """``per_prompt`` completions of every prompt from the recipe's base policy (no adapter), with the
    recipe's sampling settings; batch b is seeded ``seed + b``."""
    from tqdm.auto import tqdm

    from brainrl.policy import load_policy, neutralise_generation_config, sample_completions

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_policy(recipe.policy.model, recipe.policy.dtype, device,
                                   trust_remote_code=recipe.policy.trust_remote_code)
    neutralise_generation_config(model, tokenizer)
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(prompts) * per_prompt, desc="base-policy samples", unit="text") as bar:
        for b, start in enumerate(range(0, len(prompts), batch_prompts)):
            batch = prompts[start:start + batch_prompts]
            samples = sample_completions(model, tokenizer, batch, recipe.sampling, num_completions=per_prompt,
                                         system=recipe.data.system_prompt, seed=seed + b, device=device)
            rows += [{"prompt": batch[int(g)], "text": t} for g, t in zip(samples.group, samples.texts)]
            bar.update(len(samples.texts))
    return rows


def _policy_rows(recipe, out: Path, split: str, prompts: list[str], per_prompt: int, seed: int) -> list[dict]:
    """Sampled rows, reused from ``out`` when an earlier run sampled the same thing (so a rerun resumes)."""
    from brainrl.provenance import content_hash

    fingerprint = content_hash({"policy": recipe.policy.model, "sampling": vars(recipe.sampling), "prompts": prompts,
                                "per_prompt": per_prompt, "seed": seed, "system": recipe.data.system_prompt})
    path = out / SAMPLES_FILE.format(split=split)
    if path.exists():
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if lines and lines[0].get("fingerprint") == fingerprint:
            print(f"reusing {len(lines) - 1} sampled {split} texts from {path}")
            return lines[1:]
    rows = sample_policy_texts(recipe, prompts, per_prompt, seed)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [{"fingerprint": fingerprint}, *rows]),
                   encoding="utf-8")
    tmp.replace(path)
    return rows


def _file_rows(args) -> tuple[list[dict], list[str]]:
    from brainrl.cli.common import read_texts

    rows, sources = [], []
    for file in args.texts:
        rows += [{"prompt": f"{file}:{i}", "text": t} for i, t in enumerate(read_texts([], file))]
        sources.append(f"texts:{file}")
    for file in args.completions:
        path = Path(file)
        if not path.exists():
            raise FileNotFoundError(f"Completions file {file!r} not found (a run folder's completions.jsonl).")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                rows.append({"prompt": record.get("prompt", ""), "text": record["completion"]})
        sources.append(f"completions:{file}")
    for folder in args.campaign:
        from brainrl.sbi.simulation.campaign import load_campaign_arrays

        arrays = load_campaign_arrays(folder)
        rows += [{"prompt": f"campaign:{i}", "text": t} for i, t in enumerate(arrays["text"])]
        sources.append(f"campaign:{folder}")
    return rows, sources


def run_distill(args: argparse.Namespace) -> int:
    import torch

    from brainrl.brain.distill import DistillConfig, distill, fidelity_summary, teacher_maps
    from brainrl.brain.pipeline import BrainPipeline
    from brainrl.train.recipe import load_recipe, read_prompts, resolve_path

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.brain.model == "surrogate":
        raise ValueError("The recipe's brain model is already a surrogate; distil from the teacher's recipe "
                         "(e.g. recipes/offline_broca.yaml).")
    config = DistillConfig(k=args.k, encoder=args.encoder, embedding_dims=args.embedding_dims, seed=args.seed)
    out = Path(args.out)
    file_rows, sources = _file_rows(args)
    per_prompt = args.per_prompt if args.per_prompt is not None else (0 if file_rows else 12)
    if per_prompt < 0 or args.heldout_per_prompt < 0:
        raise ValueError("--per-prompt and --heldout-per-prompt must be >= 0.")
    train_rows = list(file_rows)
    if per_prompt:
        train_prompts = read_prompts(resolve_path(recipe, recipe.data.train))
        train_rows += _policy_rows(recipe, out, "train", train_prompts, per_prompt, args.seed)
        sources.append(f"policy:{recipe.policy.model} x {per_prompt} per training prompt")
    if not train_rows:
        raise ValueError("No training texts: pass --per-prompt N (base-policy samples), --texts, --completions "
                         "or --campaign.")
    if args.heldout_texts:
        from brainrl.cli.common import read_texts

        heldout_rows = [{"prompt": f"heldout:{i}", "text": t} for i, t in enumerate(read_texts([], args.heldout_texts))]
        heldout_source = f"texts:{args.heldout_texts}"
    else:
        if args.heldout_per_prompt < 2:
            raise ValueError("--heldout-per-prompt must be >= 2 (rank agreement is measured within prompts), or "
                             "give --heldout-texts FILE.")
        heldout_prompts = read_prompts(resolve_path(recipe, recipe.data.heldout))
        heldout_rows = _policy_rows(recipe, out, "heldout", heldout_prompts, args.heldout_per_prompt,
                                    args.seed + 100_000)
        heldout_source = f"policy:{recipe.policy.model} x {args.heldout_per_prompt} per held-out prompt"
    seen = {r["text"] for r in train_rows}
    heldout_rows = [r for r in heldout_rows if r["text"] not in seen]  # held-out means unseen
    pipeline = BrainPipeline.shared(recipe.brain)
    train = teacher_maps([r["text"] for r in train_rows], pipeline, [r["prompt"] for r in train_rows], progress=True)
    heldout = teacher_maps([r["text"] for r in heldout_rows], pipeline, [r["prompt"] for r in heldout_rows],
                           progress=True)
    teacher = {"pipeline": vars(recipe.brain), "identity": pipeline.model.identity(),
               "describe": pipeline.describe(), "map_cache": dict(pipeline.counters)}
    data = {"train_sources": sources, "heldout_source": heldout_source, "recipe": str(args.recipe),
            "per_prompt": per_prompt, "heldout_per_prompt": args.heldout_per_prompt}
    student, card = distill(train, heldout, config, teacher=teacher, data=data, out_dir=out)
    print_fidelity(card)
    print(f"\nstudent saved to {out} ({fidelity_summary(card['heldout_fidelity'])}).\n"
          f"Use it in a recipe: brain: {{speech: text-only, model: surrogate, model_kwargs: {{path: {out}}}, "
          f"cache_dir: \"\"}}")
    return 0


def print_fidelity(card: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    report = card["heldout_fidelity"]
    fit = card["fit"]
    table = Table(title=f"Held-out fidelity, student vs teacher ({report['n']} texts; PCA k = {fit['pca_k']} keeps "
                        f"{fit['pca_explained_variance']:.1%} of the teacher's variance)")
    for column in ("ROI", "r mean", "r selectivity", "within-group rho (sel.)", "concordant pairs (sel.)",
                   "PCA ceiling r (sel.)"):
        table.add_column(column)
    for name, row in report["rois"].items():
        sel = row["selectivity"]
        table.add_row(name, f"{row['mean']['r']:.3f}", f"{sel['r']:.3f}", f"{sel['within_group_spearman']:.3f}",
                      f"{sel['concordant_pairs']:.1%}", f"{sel['pca_ceiling_r']:.3f}")
    Console(width=130).print(table)
    print(f"global mean r = {report['global_mean_r']:.3f}; map-level r median {report['map_r_median']:.3f}, "
          f"min {report['map_r_min']:.3f}")
