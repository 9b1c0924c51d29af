"""The θ validator: does a generator hit the θ* it is asked for, and can the answer be trusted?

Held-out (θ*, topic) prompts (seeded, disjoint from the training prompts' seed) go to the base generator
and, if given, to base + adapter with identical sampling and seeds; every completion is simulated
(speech + brain pipeline) and decoded by the posterior. Sampling is the evaluation core's
(``brainrl.evaluation.sample_pair``). Reported per model and per dimension, with 95% CIs that treat the
prompt as the unit (completions of one prompt are not independent; base and tuned stay paired by prompt):
means over completions (the reward, the fraction flagged OOD, interval coverages) get the core's
prompt-clustered t interval, r and RMSE the same interval on their linearisation (``report.stats``:
``pearson_interval``, ``rmse_interval``; simulated coverage in docs/theta.md):

- Pearson r and RMSE between requested θ* and the posterior mean, and the Bayes RMSE (charges spread);
- calibration of θ* under the posterior: rank u = P_q(θ < θ*), coverage of the central 50% / 90%
  intervals, KS distance of the ranks from uniform (with its p-value);
- out-of-distribution scores (``brainrl.sbi.inference.ood``): fraction flagged, median distance and p-value;
- the θ-target reward −E_q‖θ − θ*‖² (all six dims), and tuned − base differences;
- a prior-only reference: what a decoder that ignores the text (the prior as every posterior) scores on
  the same items, and each model's reward gain over it (no gain = the maps carry no θ* information).

Validation that one decoder cannot game: beside the training posterior (the reward's decoder), the same
completions are judged by ``independent`` judges the training did not optimise: a second posterior fitted
on a disjoint campaign (``second_posterior``) and the offline text judge (``brainrl.sbi.judges.text``), each
with per-model r/RMSE and tuned − base differences with the same intervals. Completions are
decoded as the campaign spoke its texts (``text_format``) through the campaign's pipeline (refused when
it differs). Input-space checks beside the learned-summary OOD score: each map's share of variance
outside the PCA basis (``projection_residual``, against the basis' own fit frames) and a set-level MMD
permutation test of standardised time-mean coefficients against the campaign's held-out items.

Writes ``validation.json``, ``completions.jsonl`` and figures (requested-vs-decoded scatter per dim,
OOD histogram, rank ECDFs); ``print_validation`` prints the base-vs-tuned table.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from brainrl.brain.pipeline import PipelineConfig
from brainrl.policy.sampling import SamplingConfig
from brainrl.provenance import json_default, versions
from brainrl.sbi.inference.ood import DEFAULT_THRESHOLD, OODReference, summarize_scores
from brainrl.sbi.simulation.prior import PARAM_NAMES
from brainrl.sbi.simulation.topics import TOPICS
from brainrl.sbi.theta.prompts import build_theta_prompts, system_prompt_for
from brainrl.sbi.theta.reward import theta_distance

log = logging.getLogger(__name__)

VALIDATION_FILE = "validation.json"
#: how every interval of validation.json is computed (recorded with it)
INTERVAL_METHOD = ("prompt-clustered t (brainrl.report.stats.cluster_interval): means directly; Pearson r (Fisher z) "
                   "and RMSE through their linearisation (report.stats.pearson_interval, rmse_interval)")
PACKAGES = ("brainrl", "numpy", "torch", "transformers", "peft", "keras", "bayesflow", "scikit-learn")


@dataclass
class ValidateConfig:
    """Settings of one validation (all recorded in the output)."""

    n: int = 64  # held-out prompts
    seed: int = 1000  # θ* draws and sampling seeds; training prompts use seed 0
    topics: list[str] = field(default_factory=lambda: list(TOPICS))
    completions_per_prompt: int = 1
    batch_prompts: int = 16
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=1.0, max_new_tokens=160))
    #: ``block`` (five numbered headlines, θ* as numbers) or ``headline`` (one headline, θ* in words after
    #: worked examples: the SmolLM2 campaign's prompt), as in ``brainrl.sbi.theta.prompts``
    prompt_style: str = "block"
    #: "style" = the prompt style's system prompt (``theta_prompts.system_prompt_for``); None = none
    system_prompt: str | None = "style"
    #: None = the posterior's training campaign's speech + brain pipeline (from its card)
    pipeline: PipelineConfig | None = None
    text_format: str = "campaign"  # or "raw" (speak the completion as generated)
    n_samples: int = 200  # posterior draws per completion
    posterior_seed: int = 0
    ood_threshold: float = DEFAULT_THRESHOLD
    dtype: str = "auto"


# -- statistics -------------------------------------------------------------------------------------
def _stat(interval: Any) -> dict[str, float]:
    """An ``Interval`` as validation.json stores it."""
    return {"value": float(interval.estimate), "ci_low": float(interval.low), "ci_high": float(interval.high)}


def item_rewards(draws: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(n,) −E_q‖θ − θ*‖² per item (draws (n, S, d), targets (n, d)): the θ reward's ``expected`` form with
    unit weights; a failed item's NaN draws give NaN."""
    return -theta_distance(draws, targets, np.ones(targets.shape[-1]), "expected")


def _mean_interval(values: np.ndarray, prompt_index: np.ndarray, paired: np.ndarray | None = None) -> dict[str, float]:
    """A mean (or tuned − base difference of means) over completions with the evaluation core's interval:
    the prompt-clustered t interval (``brainrl.report.stats.cluster_interval``); NaN values are left out."""
    from brainrl.report.stats import cluster_interval

    return _stat(cluster_interval(values, prompt_index, paired=paired))


def dimension_intervals(targets: np.ndarray, draws: np.ndarray, prompt_index: np.ndarray) -> dict[str, list]:
    """Per dimension and with 95% intervals that treat the prompt as the unit: Pearson r and RMSE between θ*
    and the posterior mean, the Bayes RMSE (charges the spread) and the coverage of the central 50% / 90%
    posterior intervals (rank u = P_q(θ < θ*) of θ* among the draws). Intervals: r and RMSE by ``report.stats.pearson_interval``/``rmse_interval`` (the core's cluster t interval on
    their linearisation), Bayes RMSE as the RMSE of each item's root expected squared error, coverages as
    means of indicators (``cluster_interval``)."""
    from brainrl.report.stats import pearson_interval, rmse_interval

    means = draws.mean(axis=1)
    ranks = np.mean(draws < targets[:, None, :], axis=1)
    expected_sq = np.mean((draws - targets[:, None, :]) ** 2, axis=1)  # (n, d) E_q[(θ − θ*)²] per item
    out: dict[str, list] = {k: [] for k in ("pearson_r", "rmse", "bayes_rmse", "coverage_50", "coverage_90")}
    for j in range(targets.shape[1]):
        out["pearson_r"].append(_stat(pearson_interval(targets[:, j], means[:, j], prompt_index)))
        out["rmse"].append(_stat(rmse_interval(means[:, j] - targets[:, j], prompt_index)))
        out["bayes_rmse"].append(_stat(rmse_interval(np.sqrt(expected_sq[:, j]), prompt_index)))
        out["coverage_50"].append(_mean_interval((np.abs(ranks[:, j] - 0.5) <= 0.25).astype(float), prompt_index))
        out["coverage_90"].append(_mean_interval((np.abs(ranks[:, j] - 0.5) <= 0.45).astype(float), prompt_index))
    return out


@dataclass
class ModelDecoding:
    """One model's decoded validation items (rows = completions; NaN rows = failed maps)."""

    texts: list[str]
    prompt_index: np.ndarray  # (N,) which prompt each completion answers
    targets: np.ndarray  # (N, 6)
    draws: np.ndarray  # (N, S, 6), NaN where failed
    ok: np.ndarray  # (N,) bool
    failures: dict[int, str]
    ood: Any  # OODScores over the ok rows (or None)
    maps: list[Any] = field(default_factory=list)  # BrainMap or Failed per row (reused by the other judges)


def model_statistics(dec: ModelDecoding, names: Sequence[str]) -> dict[str, Any]:
    """One model's statistics with 95% prompt-clustered intervals (``dimension_intervals``)."""
    ok = dec.ok
    intervals = dimension_intervals(dec.targets[ok], dec.draws[ok], dec.prompt_index[ok])
    reward = item_rewards(dec.draws, dec.targets)  # (N,), NaN if failed
    flagged = np.full(len(ok), np.nan)
    if dec.ood is not None:
        flagged[ok] = dec.ood.flagged.astype(float)
    per_dim = {name: {k: intervals[k][j] for k in intervals} for j, name in enumerate(names)}
    ranks = np.mean(dec.draws[ok] < dec.targets[ok][:, None, :], axis=1)
    calibration = {}
    from scipy.stats import kstest

    for j, name in enumerate(names):
        if len(ranks) >= 3:
            test = kstest(ranks[:, j], "uniform")
            calibration[name] = {"ks_statistic": float(test.statistic), "ks_pvalue": float(test.pvalue)}
        else:
            calibration[name] = {"ks_statistic": float("nan"), "ks_pvalue": float("nan")}
    return {
        "n_completions": int(len(ok)), "n_decoded": int(ok.sum()), "n_failed": int((~ok).sum()),
        "failure_reasons": sorted(set(dec.failures.values()))[:5],
        "per_dimension": per_dim, "calibration": calibration,
        "reward": _mean_interval(reward, dec.prompt_index),
        "ood": {**summarize_scores(dec.ood),
                "fraction_flagged_ci": [_mean_interval(flagged, dec.prompt_index)[k] for k in ("ci_low", "ci_high")]}
        if dec.ood is not None else None,
        "completion_words_mean": float(np.mean([len(t.split()) for t in dec.texts])) if dec.texts else 0.0,
    }


def prior_expected_sq(targets: np.ndarray, prior: Any) -> np.ndarray:
    """(n, d) E_prior[(θ − θ*)²] = (prior mean − θ*)² + prior variance, per item and dimension."""
    centre = (prior.low + prior.high) / 2.0
    return (centre - targets) ** 2 + prior.variance


def prior_reference(dec: ModelDecoding, names: Sequence[str], prior: Any = None, point: bool = False) -> dict[str, Any]:
    """What a decoder that ignores the text scores on the same items: the prior as every item's posterior.

    A model's decoded θ carries information about θ* only where it beats this (lower RMSE than the prior
    mean, reward above the prior's); a posterior close to the prior scores about the same as this for any
    generator. ``reward_gain`` = model reward − prior reward on the model's decoded items, paired by item.
    """
    from brainrl.report.stats import rmse_interval
    from brainrl.sbi.simulation.prior import ThetaPrior

    prior = prior or ThetaPrior(names=tuple(names))
    rows = np.flatnonzero(dec.ok)
    if len(rows) == 0:
        return {"n": 0}
    targets, index = dec.targets[rows], dec.prompt_index[rows]
    centre = (prior.low + prior.high) / 2.0
    # a point judge (one estimate, no spread) is compared with the prior's point, its mean
    sq = (centre - targets) ** 2 if point else prior_expected_sq(targets, prior)  # (n, d)
    prior_reward = -np.sum(sq, axis=1)
    model_reward = item_rewards(dec.draws[rows], targets)
    return {
        "n": int(len(rows)), "prior": {"low": prior.low, "high": prior.high},
        "rmse_of_prior_mean": {n: _stat(rmse_interval(centre - targets[:, j], index)) for j, n in enumerate(names)},
        "reward": _mean_interval(prior_reward, index),
        "reward_gain": _mean_interval(model_reward, index, paired=prior_reward),
    }


def paired_differences(base: ModelDecoding, tuned: ModelDecoding, names: Sequence[str]) -> dict[str, Any]:
    """tuned − base of RMSE, r and squared error per dim and of the reward, on completions where both
    decoded, paired by prompt: means (the reward, squared errors) with the core's cluster t interval, r and
    RMSE with its jackknife form (``report.stats.pearson_interval``/``rmse_interval``)."""
    from brainrl.report.stats import pearson_interval, rmse_interval

    both = base.ok & tuned.ok
    if both.sum() < 3:
        return {"n_pairs": int(both.sum())}
    rows = np.flatnonzero(both)
    index, targets = base.prompt_index[rows], base.targets[rows]
    means = [d.draws[rows].mean(axis=1) for d in (base, tuned)]
    per_item = [item_rewards(d.draws[rows], targets) for d in (base, tuned)]
    # per dimension E_q(θ − θ*)² (a point judge: its squared error), tuned − base with the same interval as
    # the reward: the reward's decomposition by dimension
    sq = [np.mean((d.draws[rows] - targets[:, None, :]) ** 2, axis=1) for d in (base, tuned)]
    return {
        "n_pairs": int(both.sum()),
        "reward": _mean_interval(per_item[1], index, paired=per_item[0]),
        "sq_error": {n: _mean_interval(sq[1][:, j], index, paired=sq[0][:, j]) for j, n in enumerate(names)},
        "rmse": {n: _stat(rmse_interval(means[1][:, j] - targets[:, j], index, paired=means[0][:, j] - targets[:, j]))
                 for j, n in enumerate(names)},
        "pearson_r": {n: _stat(pearson_interval(targets[:, j], means[1][:, j], index, paired=means[0][:, j]))
                      for j, n in enumerate(names)},
    }


# -- generation, simulation, decoding ------------------------------------------------------------------
def generate_texts(model, tokenizer, prompts: Sequence[str], config: ValidateConfig,
                   adapter: bool) -> dict[str, tuple[list[str], list[int]]]:
    """Completions of base (and tuned, when the model carries an adapter) with identical seeds, through the
    evaluation core's ``sample_pair`` (batch b of ``batch_prompts`` prompts uses seed ``seed * 1009 + b``)."""
    from brainrl.evaluation import sample_pair

    samples = sample_pair(model, tokenizer, prompts, config.sampling, per_prompt=config.completions_per_prompt,
                          seed=config.seed * 1009, batch_prompts=config.batch_prompts,
                          system=system_prompt_for(config.prompt_style) if config.system_prompt == "style"
                          else config.system_prompt,
                          kl=False, progress=False, base_only=not adapter)
    index = samples.prompt_index.tolist()
    return {name: (texts, list(index)) for name, texts in samples.texts.items()}


def chat_generator_texts(generators: dict[str, Any], prompts: Sequence[str],
                         config: ValidateConfig) -> dict[str, tuple[list[str], list[int]]]:
    """Replies of chat generators (``generate(conversations, seeds)``) to the held-out prompts, the same
    seeds for every generator (completion c of prompt i: ``seed * 1009 + c * n + i``); a failed reply is
    an empty completion (decoded as a failure with its reason)."""
    from brainrl.brain.base import Failed

    if set(generators) - {"base", "tuned"} or "base" not in generators:
        raise ValueError(f"generators must be {{'base': …}} or {{'base': …, 'tuned': …}}; got {sorted(generators)}.")
    system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
    conversations = [system + [{"role": "user", "content": p}] for p in prompts]
    out = {}
    for name, generator in generators.items():
        texts: list[str] = []
        index: list[int] = []
        for c in range(config.completions_per_prompt):
            seeds = [config.seed * 1009 + c * len(prompts) + i for i in range(len(prompts))]
            replies = generator.generate(conversations, seeds)
            texts += ["" if isinstance(r, Failed) else str(r) for r in replies]
            index += list(range(len(prompts)))
        out[name] = (texts, index)
    return out


def spoken_maps(texts: list[str], pipeline: Callable, text_format: str = "campaign") -> list[Any]:
    """Brain maps (or ``Failed``) of completions spoken as the campaign spoke its texts."""
    from brainrl.brain.base import Failed
    from brainrl.sbi.inference.decode import campaign_text

    spoken = [campaign_text(t) if text_format == "campaign" else t for t in texts]
    keep = [i for i, t in enumerate(spoken) if t]
    maps: list[Any] = [Failed("the completion holds no headline text after cleaning (campaign format)")] * len(texts)
    for i, m in zip(keep, pipeline([spoken[i] for i in keep]) if keep else []):
        maps[i] = m
    return maps


def decode_texts(texts: list[str], prompt_index: np.ndarray, targets: np.ndarray, pipeline: Callable,
                 posterior: Any, ood: OODReference | None, config: ValidateConfig, maps: list[Any] | None = None
                 ) -> ModelDecoding:
    from brainrl.brain.base import BrainMap

    maps = maps if maps is not None else spoken_maps(texts, pipeline, config.text_format)
    ok = np.array([isinstance(m, BrainMap) for m in maps])
    failures = {i: getattr(m, "reason", repr(m)) for i, m in enumerate(maps) if not ok[i]}
    n_params = targets.shape[1]
    draws = np.full((len(texts), config.n_samples, n_params), np.nan)
    scores = None
    if ok.any():
        good = [m for m, flag in zip(maps, ok) if flag]
        inputs = posterior.prepare(good)
        draws[ok] = posterior.sample(inputs, config.n_samples, seed=config.posterior_seed)
        if ood is not None:
            scores = ood.score(posterior.summaries(inputs), config.ood_threshold)
    return ModelDecoding(texts, prompt_index, targets[prompt_index], draws, ok, failures, scores, list(maps))


def load_second_posteriors(second: Any) -> tuple[list[Any], list[str]]:
    """``validate``'s ``second_posterior``: None, one folder or posterior, or a sequence of them (fits of one
    disjoint campaign with other seeds, or of several disjoint campaigns). Returns the loaded posteriors and
    what identifies each in the report."""
    if second is None:
        return [], []
    from brainrl.sbi.inference.estimator import Posterior

    items = list(second) if isinstance(second, (list, tuple)) else [second]
    loaded = [Posterior.load(p) if isinstance(p, (str, Path)) else p for p in items]
    return loaded, [str(p) if isinstance(p, (str, Path)) else repr(p) for p in items]


def pooled_decoding(fits: Sequence[ModelDecoding]) -> ModelDecoding:
    """Several posteriors' decodings of the same items as one: their draws side by side, an equal-weight
    mixture, so the pooled mean is the mean of the fits' means. One fit's accident then cannot decide the
    verdict alone. The items and failures are those of the first (all decode the same maps)."""
    first = fits[0]
    draws = np.concatenate([f.draws for f in fits], axis=1)
    return ModelDecoding(first.texts, first.prompt_index, first.targets, draws, first.ok, dict(first.failures), None,
                         first.maps)


def judge_decoding(dec: ModelDecoding, estimates: np.ndarray, ok: np.ndarray | None = None) -> ModelDecoding:
    """Point estimates (N, 6) of another judge as a one-draw decoding, so the same statistics apply."""
    ok = dec.ok if ok is None else ok
    draws = np.full((len(dec.texts), 1, estimates.shape[1]), np.nan)
    draws[ok, 0] = estimates[ok]
    return ModelDecoding(dec.texts, dec.prompt_index, dec.targets, draws, ok, dict(dec.failures), None)


def projection_residual(maps: Sequence[Any], projection: Any) -> np.ndarray:
    """Per map: the share of its standardised frames' energy outside the PCA basis (0 = all inside)."""
    out = []
    for m in maps:
        frames = np.asarray(getattr(m, "data", m), np.float32)[: projection.t_max]
        z = (frames - projection.mean) / projection.std
        inside = float(np.sum((z @ projection.components.T) ** 2))
        total = float(np.sum(z ** 2))
        out.append(1.0 - inside / total if total > 0 else float("nan"))
    return np.array(out)


def mmd_test(x: np.ndarray, y: np.ndarray, n_perm: int = 500, seed: int = 0) -> dict[str, float]:
    """Two-sample test of equal distributions: RBF-kernel MMD² (median-distance bandwidth), permutation p."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or len(y) < 3:
        return {"mmd2": float("nan"), "p_value": float("nan"), "n_x": len(x), "n_y": len(y)}
    z = np.concatenate([x, y])
    sq = np.sum((z[:, None, :] - z[None, :, :]) ** 2, axis=-1)
    bandwidth = np.median(sq[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-sq / bandwidth)
    n = len(x)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        return float(k[np.ix_(a, a)].mean() + k[np.ix_(b, b)].mean() - 2 * k[np.ix_(a, b)].mean())

    observed = stat(np.arange(len(z)))
    rng = np.random.default_rng(seed)
    null = np.array([stat(rng.permutation(len(z))) for _ in range(n_perm)])
    return {"mmd2": observed, "p_value": float((1 + np.sum(null >= observed)) / (1 + n_perm)), "n_x": int(n),
            "n_y": int(len(y)), "bandwidth": float(bandwidth)}


def time_mean_features(coeffs: np.ndarray, mask: np.ndarray, scaling: Any = None) -> np.ndarray:
    """(n, k) mean over valid frames of (standardised) coefficients."""
    coeffs = scaling.apply(coeffs, mask) if scaling is not None else coeffs
    return (coeffs * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)


def input_space_checks(decoded: dict[str, ModelDecoding], posterior: Any, seed: int = 0,
                       max_reference: int = 200) -> dict[str, Any]:
    """Projection residuals per model and the set-level MMD test against the campaign's held-out items."""
    from brainrl.sbi.inference.estimator import heldout_rows

    projection = posterior.projection
    evr = projection.explained_variance_ratio
    out: dict[str, Any] = {"fit_frames_residual": None if evr is None else float(1.0 - np.sum(evr))}
    reference = None
    campaigns = (getattr(posterior, "meta", None) or {}).get("campaigns") or []
    dirs = (posterior.meta.get("data") or {}).get("dir") if campaigns else None
    if dirs:
        from brainrl.sbi.simulation.campaign import load_campaign_arrays

        arrays = load_campaign_arrays(dirs if isinstance(dirs, str) else dirs[0])
        rows = np.concatenate([heldout_rows(arrays["ids"], posterior.meta, s) for s in ("val", "test")])[:max_reference]
        reference = time_mean_features(arrays["coeffs"][rows], arrays["mask"][rows], getattr(posterior, "scaling", None))
    for name, dec in decoded.items():
        good = [m for m, flag in zip(dec.maps, dec.ok) if flag]
        if not good:
            out[name] = {"n": 0}
            continue
        residual = projection_residual(good, projection)
        coeffs, mask = posterior.prepare(good)
        feats = time_mean_features(coeffs, mask, getattr(posterior, "scaling", None))
        out[name] = {"n": len(good), "projection_residual_median": float(np.nanmedian(residual)),
                     "projection_residual_max": float(np.nanmax(residual)),
                     "set_mmd_vs_campaign_heldout": mmd_test(feats, reference, seed=seed) if reference is not None
                     else {"note": "the posterior's card names no campaign folder"}}
    return out


def _load_ood(posterior: Any, posterior_dir: str | Path | None) -> OODReference | None:
    stored = getattr(posterior, "ood_reference", None)
    if stored is not None:
        return stored
    if posterior_dir is None:
        log.warning("no OOD statistics for the injected posterior; OOD scores are skipped")
        return None
    try:
        return OODReference.load(posterior_dir)
    except FileNotFoundError:
        from brainrl.sbi.inference.ood import fit_ood

        log.info("no OOD statistics in %s yet; fitting them from the posterior's training campaign", posterior_dir)
        return fit_ood(posterior, None, posterior_dir)


def validate(posterior: Any, base: str, out_dir: str | Path, adapter: str | Path | None = None,
             config: ValidateConfig | None = None, *, model=None, tokenizer=None, pipeline: Callable | None = None,
             ood: OODReference | None = None, second_posterior: Any = None, judge: Any = "packaged",
             generators: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a generator (``base`` spec, optionally + ``adapter``) against a posterior; writes ``out_dir``.

    ``posterior`` is a folder or a loaded posterior; ``model``/``tokenizer``/``pipeline`` may be injected
    (tests, notebooks), otherwise they come from ``base`` and ``config.pipeline``. ``second_posterior``
    (a folder or loaded posterior fitted on a disjoint campaign, or a list of them: pooled as an equal mixture,
    each also reported alone as ``second_posterior_<k>``) and ``judge`` (a ``TextJudge``, a
    calibration path, ``"packaged"``, or None to skip) are the independent judges. ``generators``
    (``{"base": g}`` or ``{"base": g, "tuned": h}``, chat generators of ``brainrl.sbi.simulation.generators``: the
    procedural generator, an API model, a local one) replace the policy model: their replies are validated
    instead (``base`` then only names the base in the report).
    """
    import torch

    config = config or ValidateConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    posterior_dir = None
    if isinstance(posterior, (str, Path)):
        from brainrl.sbi.inference.estimator import Posterior

        posterior_dir = Path(posterior)
        posterior = Posterior.load(posterior_dir)
    ood = ood or _load_ood(posterior, posterior_dir)
    names = tuple(getattr(posterior, "param_names", PARAM_NAMES))
    rows = build_theta_prompts(config.n, config.seed, config.topics, config.prompt_style)
    prompts = [r["prompt"] for r in rows]
    targets = np.array([r["theta_target"] for r in rows], dtype=float)

    t0 = time.perf_counter()
    if generators is not None:
        generated = chat_generator_texts(generators, prompts, config)
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if model is None:
            from brainrl.policy import load_policy

            model, tokenizer = load_policy(base, config.dtype, device)
        from brainrl.policy import neutralise_generation_config

        neutralise_generation_config(model, tokenizer)
        if adapter is not None:
            from peft import PeftModel

            if not (Path(adapter) / "adapter_config.json").is_file():
                raise FileNotFoundError(f"{adapter} holds no adapter_config.json; pass a run's adapter/ folder.")
            model = PeftModel.from_pretrained(model, str(adapter))
        model.eval()
        t0 = time.perf_counter()
        generated = generate_texts(model, tokenizer, prompts, config, adapter is not None)
    generation_s = time.perf_counter() - t0
    if pipeline is None:
        from brainrl.brain.pipeline import BrainPipeline

        pipe_config = config.pipeline
        if pipe_config is None and (getattr(posterior, "meta", None) or {}).get("campaigns"):
            from brainrl.sbi.inference.decode import posterior_pipeline

            pipe_config = posterior_pipeline(posterior.meta)
        pipeline = BrainPipeline.shared(pipe_config)
    from brainrl.sbi.theta.reward import check_pipeline

    seconds, second_ids = load_second_posteriors(second_posterior)
    if hasattr(pipeline, "describe"):
        for which, post in (("the training posterior", posterior), *(("the second posterior", p) for p in seconds)):
            if (getattr(post, "meta", None) or {}).get("campaigns"):
                check_pipeline(post.meta, pipeline.describe(), f"validate (for {which})")
    t0 = time.perf_counter()
    decoded = {name: decode_texts(texts, np.array(index), targets, pipeline, posterior, ood, config)
               for name, (texts, index) in generated.items()}
    decode_s = time.perf_counter() - t0
    independent: dict[str, dict[str, ModelDecoding]] = {}
    identities: dict[str, Any] = {}
    if seconds:
        per_fit = [{name: decode_texts(dec.texts, dec.prompt_index, targets, pipeline, post, None, config, maps=dec.maps)
                    for name, dec in decoded.items()} for post in seconds]
        independent["second_posterior"] = per_fit[0] if len(per_fit) == 1 else \
            {name: pooled_decoding([fit[name] for fit in per_fit]) for name in decoded}
        identities["second_posterior"] = second_ids[0] if len(second_ids) == 1 else {"pooled": second_ids}
        if len(per_fit) > 1:  # each fit's own verdict beside the pooled one: the judge's fit-to-fit spread
            for k, (fit, identity) in enumerate(zip(per_fit, second_ids), start=1):
                independent[f"second_posterior_{k}"], identities[f"second_posterior_{k}"] = fit, identity
    if judge is not None:
        from brainrl.sbi.inference.decode import campaign_text
        from brainrl.sbi.judges.text import TextJudge

        judge = judge if isinstance(judge, TextJudge) else TextJudge.load(None if judge == "packaged" else judge)
        independent["text_judge"] = {}
        for name, dec in decoded.items():
            spoken = [campaign_text(t) if config.text_format == "campaign" else t for t in dec.texts]
            has_text = np.array([bool(t) for t in spoken])
            estimates = np.full((len(spoken), len(names)), np.nan)
            if has_text.any():
                estimates[has_text] = judge.predict([t for t in spoken if t])
            independent["text_judge"][name] = judge_decoding(dec, estimates, has_text)
    result: dict[str, Any] = {
        "posterior": str(posterior_dir) if posterior_dir else repr(posterior),
        "posterior_data": (getattr(posterior, "meta", {}) or {}).get("data"),
        "base": str(base), "adapter": str(adapter) if adapter else None,
        "generators": {name: g.identity() for name, g in generators.items()} if generators else None,
        "param_names": list(names), "n_prompts": len(prompts),
        "config": {**asdict(config), "pipeline": asdict(config.pipeline) if config.pipeline else "campaign's"},
        "intervals": {"level": 0.95, "unit": "prompt", "method": INTERVAL_METHOD},
        "ood_reference": None if ood is None else {**ood.meta, "cutoff": ood.cutoff(config.ood_threshold)},
        "models": {name: model_statistics(dec, names) for name, dec in decoded.items()},
    }
    for name, dec in decoded.items():  # the text-ignoring baseline on each model's decoded items
        result["models"][name]["prior_reference"] = prior_reference(dec, names)
    if "tuned" in decoded:
        result["difference_tuned_minus_base"] = paired_differences(decoded["base"], decoded["tuned"], names)
    result["independent_judges"] = {}
    for judge_name, decs in independent.items():
        entry: dict[str, Any] = {"models": {name: model_statistics(dec, names) for name, dec in decs.items()}}
        for name, dec in decs.items():
            entry["models"][name]["prior_reference"] = prior_reference(dec, names, point=judge_name == "text_judge")
        if "tuned" in decs:
            entry["difference_tuned_minus_base"] = paired_differences(decs["base"], decs["tuned"], names)
        entry["identity"] = identities[judge_name] if judge_name in identities else (
            {"judge": "text", "card": {k: judge.card.get(k) for k in ("version", "groups", "cv_pearson_r", "corpus")}})
        result["independent_judges"][judge_name] = entry
    result["input_space"] = input_space_checks(decoded, posterior, config.seed) \
        if hasattr(posterior, "projection") else None
    result.update({"generation_s": round(generation_s, 2), "decode_s": round(decode_s, 2),
                   "seconds": round(time.perf_counter() - started, 2), "versions": versions(PACKAGES),
                   "brain_pipeline": pipeline.describe() if hasattr(pipeline, "describe") else repr(pipeline)})
    result["figures"] = write_figures(decoded, names, ood, config.ood_threshold, out_dir)
    (out_dir / VALIDATION_FILE).write_text(json.dumps(result, indent=1, default=json_default))
    _write_completions(out_dir / "completions.jsonl", rows, decoded)
    return result


def _write_completions(path: Path, rows: list[dict[str, Any]], decoded: dict[str, ModelDecoding]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for name, dec in decoded.items():
            ood_rows = np.cumsum(dec.ok) - 1
            for i, text in enumerate(dec.texts):
                p = int(dec.prompt_index[i])
                record = {"model": name, "prompt_id": p, "topic": rows[p]["topic"], "theta_target": rows[p]["theta_target"],
                          "completion": text, "decoded_mean": None, "ood": None, "failure": dec.failures.get(i)}
                if dec.ok[i]:
                    record["decoded_mean"] = [round(float(v), 4) for v in dec.draws[i].mean(axis=0)]
                    if dec.ood is not None:
                        record["ood"] = dec.ood.record(int(ood_rows[i]))
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# -- figures and table ------------------------------------------------------------------------------------
def write_figures(decoded: dict[str, ModelDecoding], names: Sequence[str], ood: OODReference | None,
                  threshold: float, out_dir: Path) -> dict[str, str]:
    """Requested-vs-decoded scatter and the OOD histogram (drawn as ``brainrl.report.figures`` draws), and per
    model BayesFlow's rank-ECDF difference of θ* under the posterior with its 95% simultaneous bands
    (``rank_ecdf_<model>.png``; the ranks are P_q(θ < θ*), BayesFlow's fractional ranks)."""
    from brainrl.report.figures import BASE_COLOR, TUNED_COLOR, new_figure, save_figure
    from brainrl.sbi.diagnostics.plots import save_bayesflow
    from brainrl.sbi.inference.estimator import import_bayesflow

    colours = {"base": BASE_COLOR, "tuned": TUNED_COLOR}
    figures = {}
    fig = new_figure(3 * len(names), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for j, (ax, name) in enumerate(zip(axes, names)):
        for model, dec in decoded.items():
            ok = dec.ok
            means = dec.draws[ok].mean(axis=1)[:, j]
            ax.scatter(dec.targets[ok, j], means, s=10, alpha=0.7, color=colours.get(model), label=model)
        ax.plot([0, 1], [0, 1], color="k", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=name, xlabel="requested θ*")
    axes[0].set_ylabel("decoded posterior mean")
    axes[0].legend(fontsize=7)
    figures["requested_vs_decoded"] = save_figure(fig, out_dir / "requested_vs_decoded.png").name

    fig = new_figure(5.5, 3.2)
    ax = fig.subplots()
    if ood is not None:
        all_d = np.concatenate([ood.reference] + [d.ood.distance for d in decoded.values() if d.ood is not None])
        bins = np.linspace(0, float(np.max(all_d)) * 1.05 + 1e-9, 30)
        ax.hist(ood.reference, bins=bins, density=True, alpha=0.5, color="tab:green", label="held-out simulations")
        for model, dec in decoded.items():
            if dec.ood is not None and len(dec.ood):
                ax.hist(dec.ood.distance, bins=bins, density=True, histtype="step", lw=1.5,
                        color=colours.get(model), label=f"{model} ({100 * dec.ood.flagged.mean():.0f}% flagged)")
        ax.axvline(ood.cutoff(threshold), color="tab:red", ls="--", lw=1, label=f"p < {threshold:g}")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no OOD statistics", ha="center", transform=ax.transAxes)
    ax.set(xlabel="Mahalanobis distance of the summary", ylabel="density", title="Out-of-distribution scores")
    figures["ood_histogram"] = save_figure(fig, out_dir / "ood_histogram.png").name

    bf = None
    for model, dec in decoded.items():
        if dec.ok.sum() < 2:
            continue
        bf = bf or import_bayesflow()
        figure = bf.diagnostics.calibration_ecdf(dec.draws[dec.ok], dec.targets[dec.ok], variable_names=list(names),
                                                 difference=True, rank_ecdf_color=colours.get(model, "#132a70"))
        figures[f"rank_ecdf_{model}"] = save_bayesflow(figure, out_dir / f"rank_ecdf_{model}.png")
    return figures


def format_stat(stat: dict[str, float] | None, digits: int = 3) -> str:
    """A validation.json statistic ({value, ci_low, ci_high}) through the project's one interval formatter
    (``report.summary.fmt_ci``)."""
    from brainrl.report.stats import Interval
    from brainrl.report.summary import fmt, fmt_ci

    if not stat or stat.get("value") is None:
        return fmt(None)
    return fmt_ci(Interval(stat["value"], stat["ci_low"], stat["ci_high"]), digits)


def print_validation(result: dict[str, Any], console=None) -> None:
    """The base-vs-tuned table (rich): r and RMSE per dimension with 95% CIs, coverage, OOD, reward."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=160)
    models = result["models"]
    diff = result.get("difference_tuned_minus_base")
    table = Table(title=f"θ validation: {result['n_prompts']} held-out prompts; base {result['base']}"
                        + (f" vs tuned {result['adapter']}" if result.get("adapter") else ""))
    table.add_column("dimension")
    for model in models:
        table.add_column(f"r ({model})")
        table.add_column(f"RMSE ({model})")
        table.add_column(f"cov90 ({model})")
    if diff and "rmse" in diff:
        table.add_column("Δ RMSE (tuned − base)")
    for name in result["param_names"]:
        row = [name]
        for model, stats in models.items():
            dim = stats["per_dimension"][name]
            row += [format_stat(dim["pearson_r"], 2), format_stat(dim["rmse"]), f"{dim['coverage_90']['value']:.2f}"]
        if diff and "rmse" in diff:
            row.append(format_stat(diff["rmse"][name]))
        table.add_row(*row)
    table.add_section()
    reward_row = ["reward −E‖θ−θ*‖²"]
    ood_row = ["OOD flagged"]
    failed_row = ["failed maps"]
    for stats in models.values():
        reward_row += [format_stat(stats["reward"]), "", ""]
        ood = stats.get("ood")
        ood_row += [f"{100 * ood['fraction_flagged']:.0f}% (p<{ood['threshold']:g})" if ood and ood.get("n") else "n/a",
                    f"median d {ood['distance_median']:.1f}" if ood and ood.get("n") else "", ""]
        failed_row += [f"{stats['n_failed']}/{stats['n_completions']}", "", ""]
    if diff and "rmse" in diff:
        reward_row.append(format_stat(diff["reward"]))
        ood_row.append("")
        failed_row.append("")
    prior_row = ["reward − prior-only"]
    for stats in models.values():
        ref = stats.get("prior_reference") or {}
        prior_row += [format_stat(ref.get("reward_gain")), f"prior-only {format_stat(ref.get('reward'))}" if ref.get("n") else "", ""]
    if diff and "rmse" in diff:
        prior_row.append("")
    for row in (reward_row, prior_row, ood_row, failed_row):
        table.add_row(*row)
    console.print(table)
    judges = result.get("independent_judges") or {}
    if judges:
        table = Table(title="Independent judges (not optimised by training): r per model and Δ RMSE tuned − base, "
                            "95% prompt-clustered CIs")
        table.add_column("judge")
        table.add_column("dimension")
        for model in models:
            table.add_column(f"r ({model})")
        table.add_column("Δ RMSE (tuned − base)")
        everyone = {"training posterior": {"models": models, "difference_tuned_minus_base": diff}, **judges}
        for judge_name, entry in everyone.items():
            jdiff = entry.get("difference_tuned_minus_base") or {}
            for name in result["param_names"]:
                row = [judge_name, name] + [format_stat(entry["models"][m]["per_dimension"][name]["pearson_r"], 2)
                                            for m in models]
                row.append(format_stat(jdiff["rmse"][name]) if "rmse" in jdiff else "")
                table.add_row(*row)
            row = [judge_name, "−E‖θ̂−θ*‖²"] + [format_stat(entry["models"][m]["reward"]) for m in models]
            row.append(format_stat(jdiff.get("reward")) if "reward" in jdiff else "")
            table.add_row(*row)
            table.add_section()
        console.print(table)
