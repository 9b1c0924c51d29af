"""Held-out evaluation of a run: base (adapter disabled) vs tuned, identical sampling and seeds.

For every held-out prompt both models draw the same number of completions from the same seed; each
completion goes through the recipe's brain pipeline once. Reported per model: target-ROI mean and
selectivity (ROI − whole-cortex mean) with 95% bootstrap CIs, and tuned − base for both with CIs. The
bootstrap resamples prompts (completions of one prompt are not independent) and keeps base and tuned
paired by prompt. KL(tuned‖base) is the exact full-vocabulary KL averaged over the tuned completions'
tokens.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from brainrl.provenance import json_default
from brainrl.train import runs
from brainrl.train.recipe import read_prompts, recipe_from_dict, resolve_path

log = logging.getLogger(__name__)


def cluster_bootstrap(values: np.ndarray, clusters: np.ndarray, n_boot: int, seed: int,
                      paired: np.ndarray | None = None, statistic: str = "mean") -> dict[str, float]:
    """Mean (or median) of ``values`` (minus that of ``paired`` if given) with a 95% percentile CI,
    resampling whole clusters (prompts) with replacement. NaN values (failed maps) are left out."""
    ids = np.unique(clusters)
    rng = np.random.default_rng(seed)
    reduce = np.nanmedian if statistic == "median" else np.nanmean

    def stat(chosen: np.ndarray) -> float:
        rows = np.concatenate([np.flatnonzero(clusters == c) for c in chosen])
        centre = reduce(values[rows])
        return float(centre - reduce(paired[rows])) if paired is not None else float(centre)

    point = stat(ids)
    boots = np.array([stat(rng.choice(ids, size=len(ids), replace=True)) for _ in range(n_boot)])
    boots = boots[np.isfinite(boots)]
    low, high = (np.percentile(boots, [2.5, 97.5]) if len(boots) else (math.nan, math.nan))
    return {"mean": point, "ci_low": float(low), "ci_high": float(high), "n": int(np.isfinite(values).sum())}


@torch.no_grad()
def kl_to_base(model, samples, chunk: int = 8) -> float:
    """Exact per-token KL(tuned‖base), averaged over all completion tokens of ``samples``."""
    from brainrl.train.losses import completion_logits, exact_kl

    total, tokens = 0.0, 0.0
    for start in range(0, samples.completion_ids.shape[0], chunk):
        rows = slice(start, start + chunk)
        args = (samples.prompt_ids[rows], samples.prompt_mask[rows], samples.completion_ids[rows],
                samples.completion_mask[rows])
        tuned = completion_logits(model, *args)
        with model.disable_adapter():
            base = completion_logits(model, *args)
        mask = args[3].float()
        total += float((exact_kl(tuned, base) * mask).sum())
        tokens += float(mask.sum())
    return total / max(tokens, 1.0)


def evaluate_run(run_dir: str | Path, overrides: Sequence[str] = (), *, model=None, tokenizer=None,
                 write: bool = True) -> dict[str, Any]:
    """Evaluate ``run_dir`` (a finished run) on its held-out prompts; writes ``eval.json``."""
    from peft import PeftModel

    from brainrl.brain.pipeline import BrainPipeline
    from brainrl.brain.base import BrainMap
    from brainrl.brain.surrogate import teacher_config
    from brainrl.cortex import stats
    from brainrl.cortex.rois import get_roi
    from brainrl.policy import load_policy, neutralise_generation_config, sample_completions

    run_dir = Path(run_dir)
    card = runs.read_run_card(run_dir)
    recipe = recipe_from_dict(card["recipe"], overrides)
    if card.get("recipe_path"):
        recipe.__dict__["source_path"] = card["recipe_path"]
    cfg = recipe.eval
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir} has no adapter: the run did not finish (resume it with --resume).")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if model is None:
        model, tokenizer = load_policy(recipe.policy.model, recipe.policy.dtype, device,
                                       trust_remote_code=recipe.policy.trust_remote_code)
    neutralise_generation_config(model, tokenizer)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).to(device).eval()
    prompts = read_prompts(resolve_path(recipe, recipe.data.heldout))
    per_prompt = max(cfg.completions_per_prompt, math.ceil(cfg.min_completions / len(prompts)))
    sampling = cfg.sampling or recipe.sampling
    temperature = sampling.temperature
    started = time.perf_counter()
    texts: dict[str, list[str]] = {"base": [], "tuned": []}
    tokens: dict[str, list[int]] = {"base": [], "tuned": []}
    clusters: list[int] = []
    kl_sum, kl_batches = 0.0, 0
    for b, start in enumerate(range(0, len(prompts), cfg.batch_prompts)):
        batch = prompts[start:start + cfg.batch_prompts]
        seed = cfg.seed + b
        tuned = sample_completions(model, tokenizer, batch, sampling, num_completions=per_prompt,
                                   system=recipe.data.system_prompt, seed=seed, temperature=temperature)
        with model.disable_adapter():
            base = sample_completions(model, tokenizer, batch, sampling, num_completions=per_prompt,
                                      system=recipe.data.system_prompt, seed=seed, temperature=temperature)
        n_tok = float(tuned.completion_mask.sum())
        kl_sum += kl_to_base(model, tuned) * n_tok
        kl_batches += n_tok
        for name, s in (("tuned", tuned), ("base", base)):
            texts[name] += s.texts
            tokens[name] += s.lengths.tolist()
        clusters += [start + int(g) for g in tuned.group]
    generation_s = time.perf_counter() - started
    pipeline = BrainPipeline.shared(teacher_config(recipe.brain))  # a surrogate's teacher scores held-out maps
    roi = get_roi(cfg.roi)
    mask = roi.mask()
    values: dict[str, dict[str, np.ndarray]] = {}
    failures: dict[str, list[str]] = {}
    for name in ("base", "tuned"):
        maps = pipeline(texts[name])
        roi_v, glob_v = [], []
        failures[name] = []
        for prediction in maps:
            if isinstance(prediction, BrainMap):
                roi_v.append(stats.roi_mean(prediction.data, mask))
                glob_v.append(stats.global_mean(prediction.data))
            else:
                failures[name].append(getattr(prediction, "reason", str(prediction)))
                roi_v.append(math.nan)
                glob_v.append(math.nan)
        roi_arr, glob_arr = np.array(roi_v), np.array(glob_v)
        values[name] = {"roi": roi_arr, "global": glob_arr, "selectivity": roi_arr - glob_arr}
    # training rewards on the held-out completions, as trained (same callables)
    reward_funcs, reward_weights = runs.build_rewards(recipe)
    reward_means = {}
    for name in ("base", "tuned"):
        reward_means[name] = {}
        for fn in reward_funcs:
            scores = np.array([math.nan if v is None else v for v in fn(prompts=None, completions=texts[name])], float)
            reward_means[name][fn.__name__] = float(np.nanmean(scores)) if np.isfinite(scores).any() else None
    cl = np.array(clusters)
    boot = dict(n_boot=cfg.bootstrap, seed=cfg.seed)
    result: dict[str, Any] = {
        "run": str(run_dir), "roi": roi.name, "roi_vertices": int(mask.sum()), "heldout_prompts": len(prompts),
        "completions_per_model": len(texts["tuned"]), "completions_per_prompt": per_prompt,
        "sampling": {**asdict(sampling), "temperature_used": temperature}, "seed": cfg.seed,
        "bootstrap": {"n": cfg.bootstrap, "resampled_unit": "prompt", "interval": "95% percentile"},
        "brain_pipeline": pipeline.describe(),
        "models": {},
        "difference_tuned_minus_base": {
            key: cluster_bootstrap(values["tuned"][key], cl, paired=values["base"][key], **boot)
            for key in ("roi", "selectivity", "global")
        },
        # medians resist the rare extreme map (e.g. a long unbroken "word"); difference of medians
        "median_difference_tuned_minus_base": {
            key: cluster_bootstrap(values["tuned"][key], cl, paired=values["base"][key], statistic="median", **boot)
            for key in ("roi", "selectivity")
        },
        # same prompt, same sample index (same seed): share of pairs where the tuned map scores higher
        "paired_win_rate": {
            key: float(np.nanmean(np.where(np.isfinite(values["tuned"][key] - values["base"][key]),
                                           values["tuned"][key] > values["base"][key], np.nan)))
            for key in ("roi", "selectivity")
        },
        "kl_to_base_per_token": kl_sum / max(kl_batches, 1.0),
        "kl_estimator": "exact full-vocabulary KL(tuned||base) on the tuned completions' tokens",
        "rewards_as_trained": reward_means,
        "failed_maps": {k: len(v) for k, v in failures.items()},
        "failure_reasons": {k: v[:5] for k, v in failures.items()},
        "generation_s": generation_s,
        "seconds": time.perf_counter() - started,
        "versions": runs.versions(runs.VERSION_PACKAGES),
    }
    for name in ("base", "tuned"):
        result["models"][name] = {
            "roi_mean": cluster_bootstrap(values[name]["roi"], cl, **boot),
            "selectivity": cluster_bootstrap(values[name]["selectivity"], cl, **boot),
            "global_mean": cluster_bootstrap(values[name]["global"], cl, **boot),
            "roi_median": cluster_bootstrap(values[name]["roi"], cl, statistic="median", **boot),
            "selectivity_median": cluster_bootstrap(values[name]["selectivity"], cl, statistic="median", **boot),
            "completion_tokens_mean": float(np.mean(tokens[name])),
            "completion_words_mean": float(np.mean([len(t.split()) for t in texts[name]])),
        }
    if write:
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2, default=json_default))
        writer = runs.JsonlWriter(run_dir / "eval_completions.jsonl")
        writer.path.unlink(missing_ok=True)
        for i in range(len(texts["tuned"])):
            writer.write({"prompt": prompts[clusters[i]], "base": texts["base"][i], "tuned": texts["tuned"][i],
                          "roi_base": values["base"]["roi"][i], "roi_tuned": values["tuned"]["roi"][i]})
    return result


def _fmt(stat: dict[str, float]) -> str:
    return f"{stat['mean']:+.4f}\n[{stat['ci_low']:+.4f}, {stat['ci_high']:+.4f}]"


def print_eval(result: dict[str, Any]) -> None:
    """A rich table: base, tuned and tuned − base with 95% CIs."""
    from rich.console import Console
    from rich.table import Table

    models, diff = result["models"], result["difference_tuned_minus_base"]
    table = Table(title=f"Held-out evaluation: {result['run']} ({result['completions_per_model']} completions per "
                        f"model, {result['heldout_prompts']} prompts, ROI {result['roi']})")
    for column in ("metric", "base (95% CI)", "tuned (95% CI)", "tuned − base (95% CI)"):
        table.add_column(column)
    table.add_row(f"{result['roi']} mean", _fmt(models["base"]["roi_mean"]), _fmt(models["tuned"]["roi_mean"]),
                  _fmt(diff["roi"]))
    table.add_row("selectivity (ROI − global)", _fmt(models["base"]["selectivity"]),
                  _fmt(models["tuned"]["selectivity"]), _fmt(diff["selectivity"]))
    med = result["median_difference_tuned_minus_base"]
    table.add_row(f"{result['roi']} median", _fmt(models["base"]["roi_median"]), _fmt(models["tuned"]["roi_median"]),
                  _fmt(med["roi"]))
    table.add_row("selectivity median", _fmt(models["base"]["selectivity_median"]),
                  _fmt(models["tuned"]["selectivity_median"]), _fmt(med["selectivity"]))
    table.add_row("global mean", _fmt(models["base"]["global_mean"]), _fmt(models["tuned"]["global_mean"]),
                  _fmt(diff["global"]))
    wins = result["paired_win_rate"]
    table.add_row("pairs with tuned > base", "", "", f"ROI {wins['roi']:.0%}, selectivity {wins['selectivity']:.0%}")
    table.add_row("completion tokens", f"{models['base']['completion_tokens_mean']:.1f}",
                  f"{models['tuned']['completion_tokens_mean']:.1f}", "")
    table.add_row("KL(tuned‖base) per token", "", f"{result['kl_to_base_per_token']:.4f}", "")
    table.add_row("failed maps", str(result["failed_maps"]["base"]), str(result["failed_maps"]["tuned"]), "")
    Console(width=130).print(table)
