#!/usr/bin/env python
"""Benchmark the SBI part: simulation throughput, projection, posterior fit time, sampling rate, memory.

    python scripts/bench_sbi.py --tiny                      # smoke run, CPU, a minute
    python scripts/bench_sbi.py --device cuda               # the paper's size: 10k x 48 x 20,484 (synthetic data)
    python scripts/bench_sbi.py --sims 50 --with-generator  # also time the embedded SmolLM2 generator
    python scripts/bench_sbi.py --sims 20 --generator-dtypes float32,bfloat16 --skip-fit

Simulations/s: speech (espeak) + brain (synthetic) on headline blocks; with --with-generator, the
embedded SmolLM2 writes them first (per_headline mode). Fit: synthetic brain sequences with a known
low-rank dependence on θ are generated chunk by chunk, projected with a fixed standardise+PCA basis
(k components, fitted on --fit-frames frames) and the paper's estimator is trained on the projections.
Results are printed as JSON (and written to --out if given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def campaign_requests(n: int, seed: int) -> list:
    """The first ``n`` items of a campaign with this seed: θ draws and topics as ``brainrl simulate`` makes them."""
    from brainrl.sbi.simulation.prior import theta_for_index
    from brainrl.sbi.simulation.simulator import HeadlineRequest
    from brainrl.sbi.simulation.topics import topic_for_index

    return [HeadlineRequest(i, theta_for_index(seed, i), topic_for_index(i)) for i in range(n)]


def smollm2_campaign_writer(dtype: str | None = None) -> tuple:
    """The SmolLM2 campaign's generator and writer as recipes/campaign_offline.yaml sets them (``dtype``
    overrides the recipe's), the model loaded: (writer, load seconds, writer settings)."""
    from dataclasses import asdict, replace

    from brainrl.sbi.simulation.campaign import load_campaign_config
    from brainrl.sbi.simulation.generators import LocalChatGenerator
    from brainrl.sbi.simulation.simulator import HeadlineWriter

    recipe = load_campaign_config(Path(__file__).resolve().parents[1] / "recipes" / "campaign_offline.yaml")
    config = recipe.generator if dtype is None else replace(recipe.generator, kwargs={**recipe.generator.kwargs,
                                                                                        "dtype": dtype})
    gen = config.build()
    assert isinstance(gen, LocalChatGenerator)
    started = time.time()
    gen._ensure_loaded()
    return HeadlineWriter(gen, **asdict(recipe.writer)), round(time.time() - started, 2), asdict(recipe.writer)


def bench_simulations(n: int, with_generator: bool | str, seed: int = 0) -> dict:
    """Generator and speech + brain throughput on the same items, side by side. ``with_generator``:
    False (fixed texts), True / "smollm2" (the embedded LLM with the generator and writer settings of
    recipes/campaign_offline.yaml) or "procedural"."""
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.sbi.simulation.parse import block_text

    out: dict = {"n_items": n}
    requests = campaign_requests(n, seed)
    if with_generator:
        from brainrl.sbi.simulation.procedural import ProceduralGenerator
        from brainrl.sbi.simulation.simulator import HeadlineWriter

        out["generator"] = "procedural" if with_generator == "procedural" else "smollm2"
        if with_generator == "procedural":
            writer = HeadlineWriter(ProceduralGenerator(), max_attempts=4, feedback=False)
        else:
            writer, out["generator_load_s"], out["writer"] = smollm2_campaign_writer()
        started = time.time()
        blocks = writer.write(requests, seed, set())
        out["generator_s"] = round(time.time() - started, 2)
        out["generator_failed"] = sum(not isinstance(b, list) for b in blocks)
        texts = [block_text(b) for b in blocks if isinstance(b, list)]
    else:  # fixed text of headline length, so only speech + brain are timed
        texts = [block_text([f"{r.topic.capitalize()} officials report item {r.index} headline {k} with about twelve "
                             "words in it today" for k in range(5)]) for r in requests]
    pipeline = BrainPipeline(PipelineConfig(cache_dir="", memory_items=0))
    pipeline(texts[:2])  # warm-up: loads MiniLM and the spatial loadings
    started = time.time()
    maps = pipeline(texts)
    seconds = time.time() - started
    frames = [m.data.shape[0] for m in maps if hasattr(m, "data")]
    out.update({"speech_brain_s": round(seconds, 2), "speech_brain_items_per_s": round(len(texts) / seconds, 2),
                "mean_frames": float(np.mean(frames)) if frames else None})
    if with_generator and texts:
        out["end_to_end_items_per_s"] = round(len(texts) / (seconds + out["generator_s"]), 4)
        out["generator_share_of_item_time"] = round(out["generator_s"] / (seconds + out["generator_s"]), 4)
    return out


def bench_generator_dtypes(n: int, dtypes: list[str], seed: int = 0) -> dict:
    """The SmolLM2 campaign's generator and writer (recipes/campaign_offline.yaml) in each dtype on the same
    requests and request seeds, one after the other in this process: seconds per item, the ratio to the first
    dtype, and how many items came out word for word the same."""
    import torch

    requests = campaign_requests(n, seed)
    out: dict = {"n_items": n, "threads": torch.get_num_threads(), "dtypes": {}}
    blocks_by_dtype, raw_seconds = {}, {}
    for dtype in dtypes:
        writer, _, _ = smollm2_campaign_writer(dtype)
        writer.write(requests[:1], seed + 1, set())  # warm-up (first-call allocations, prefix cache)
        started = time.time()
        blocks = writer.write(requests, seed, set())
        seconds = time.time() - started
        blocks_by_dtype[dtype], raw_seconds[dtype] = blocks, seconds
        out["dtypes"][dtype] = {"seconds": round(seconds, 2), "s_per_item": round(seconds / n, 3),
                                "failed": sum(not isinstance(b, list) for b in blocks)}
    first = dtypes[0]
    for dtype in dtypes[1:]:
        out["dtypes"][dtype]["speedup_vs_" + first] = round(raw_seconds[first] / raw_seconds[dtype], 2)
        out["dtypes"][dtype]["items_identical_to_" + first] = sum(
            a == b for a, b in zip(blocks_by_dtype[first], blocks_by_dtype[dtype]))
    return out


def synthetic_sequences(rng, theta, n_vertices, t_max, basis, noise=1.0):
    """(n, t_max, V) float32: frames = (θ-driven low-rank signal + noise) @ spatial basis, random lengths."""
    n, r = len(theta), basis.shape[0]
    mix = np.random.default_rng(123).normal(size=(6, r)).astype(np.float32)
    latent = (theta.astype(np.float32) @ mix)[:, None, :] + noise * rng.normal(size=(n, t_max, r)).astype(np.float32)
    lengths = rng.integers(t_max // 2, t_max + 1, size=n)
    return latent, lengths


def bench_fit(args) -> dict:
    import torch

    from brainrl.sbi.inference.estimator import EstimatorConfig, fit_posterior, Posterior
    from brainrl.sbi.simulation.projection import Projection

    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    n, t_max, v, k, r = args.items, 48, args.vertices, args.k, 64
    out: dict = {"items": n, "t_max": t_max, "vertices": v, "k": k, "device": str(device)}
    spatial = torch.from_numpy(rng.normal(size=(r, v)).astype(np.float32)).to(device)
    theta = rng.uniform(size=(n, 6)).astype(np.float32)
    latent, lengths = synthetic_sequences(rng, theta, v, t_max, spatial)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def raw_chunk(rows):  # (len(rows), t_max, V) on the device, as a brain model would return them
        lat = torch.from_numpy(latent[rows]).to(device)
        return lat @ spatial + 0.5 * torch.randn(len(rows), t_max, v, device=device)

    # 1. fit standardisation + PCA on a subset of frames (k needs more than k frames)
    started = time.time()
    fit_rows = rng.choice(n, size=min(n, max(2 * k // t_max + 1, args.fit_frames // t_max)), replace=False)
    frames = raw_chunk(fit_rows).reshape(-1, v)
    mean, std = frames.mean(0), frames.std(0).clamp_min(1e-8)
    _, s, vh = torch.linalg.svd((frames - mean) / std, full_matrices=False)
    components = vh[:k]
    out["pca_fit_s"] = round(time.time() - started, 2)
    out["pca_fit_frames"] = int(frames.shape[0])
    del frames
    # 2. project every item, chunk by chunk (raw sequences are never all in memory)
    started = time.time()
    coeffs = np.zeros((n, t_max, k), np.float32)
    for start in range(0, n, args.chunk):
        rows = np.arange(start, min(start + args.chunk, n))
        z = (raw_chunk(rows) - mean) / std
        coeffs[rows] = (z @ components.T).cpu().numpy()
    mask = (np.arange(t_max)[None] < lengths[:, None]).astype(np.float32)
    coeffs *= mask[..., None]
    out["project_s"] = round(time.time() - started, 2)
    out["raw_gb_equivalent"] = round(n * t_max * v * 4 / 1e9, 2)
    out["stored_gb"] = round(coeffs.nbytes / 1e9, 3)
    projection = Projection(mean=mean.cpu().numpy(), std=std.cpu().numpy(), components=components.cpu().numpy(),
                            t_max=t_max)
    if device.type == "cuda":
        out["peak_gpu_gib_projection"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    del spatial, components
    # 3. fit the paper's estimator
    arrays = {"coeffs": coeffs, "mask": mask, "theta": theta, "ids": np.arange(n), "projection": projection,
              "generator": ["synthetic-bench"]}
    config = EstimatorConfig(max_epochs=args.epochs, verbose=0 if args.tiny else 2, sampler={"method": "euler", "steps": 50})
    folder = Path(args.work) / "posterior"
    result = fit_posterior(arrays, folder, config)
    out.update({"fit_s": round(result.seconds, 1), "epochs": result.epochs, "s_per_epoch": round(result.seconds / result.epochs, 2),
                "best_val_loss": round(result.best_val_loss, 4), "n_train": result.n_train})
    if device.type == "cuda":
        out["peak_gpu_gib_fit"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    # 4. posterior sampling rate
    post = Posterior.load(folder)
    held = np.array(post.meta["splits"]["test"] + post.meta["splits"]["val"], dtype=int)[:100]  # not trained on
    cases = len(held)
    inputs = (coeffs[held], mask[held])
    post.sample((coeffs[:2], mask[:2]), n=10)  # warm-up
    for label, kwargs in (("euler50", {"method": "euler", "steps": 50}), ("bayesflow_default", {})):
        if label == "bayesflow_default" and args.tiny:
            continue
        # the adaptive default integrator keeps its state for every draw: sample it on fewer cases
        n_cases = cases if kwargs else min(cases, 10)
        started = time.time()
        try:
            draws = post.sample((inputs[0][:n_cases], inputs[1][:n_cases]), n=args.draws, seed=0, **kwargs) \
                if kwargs else post.approximator.sample(
                    num_samples=args.draws, conditions=post._conditions(inputs[0][:n_cases], inputs[1][:n_cases]))["theta"]
        except torch.OutOfMemoryError as err:
            out[f"samples_per_s_{label}"] = f"out of memory at {n_cases}x{args.draws} draws: {str(err)[:80]}"
            torch.cuda.empty_cache()
            continue
        seconds = time.time() - started
        out[f"samples_per_s_{label}"] = round(n_cases * args.draws / seconds, 1)
        if label == "euler50":
            mean_est = np.asarray(draws).mean(1)
            out["recovery_r_held_out"] = [round(float(np.corrcoef(mean_est[:, j], theta[held, j])[0, 1]), 3)
                                          for j in range(6)]
    out["peak_rss_gib"] = round(rss_gib(), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="smoke mode: small shapes, CPU, ~1 min")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--vertices", type=int, default=20484)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--fit-frames", type=int, default=8192)
    parser.add_argument("--chunk", type=int, default=128, help="items projected per chunk")
    parser.add_argument("--epochs", type=int, default=70)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--sims", type=int, default=20, help="items for the simulation-throughput part (0: skip)")
    parser.add_argument("--with-generator", action="store_true", help="= --generator smollm2")
    parser.add_argument("--generator", choices=["none", "smollm2", "procedural"], default="none",
                        help="time this generator beside speech + brain on the same items")
    parser.add_argument("--generator-dtypes", default="",
                        help="comma-separated, e.g. float32,bfloat16: time the SmolLM2 campaign generator in each "
                             "dtype on the same --sims items, side by side")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--work", default="/tmp/brainrl-bench-sbi")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import torch

    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.tiny:
        args.items, args.vertices, args.k, args.fit_frames, args.epochs, args.draws = 256, 2048, 64, 1024, 2, 50
        args.sims = min(args.sims, 10)
    report = {"args": vars(args), "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    from brainrl.provenance import versions

    report["versions"] = versions(("torch", "numpy", "keras", "bayesflow", "transformers"))
    if args.sims:
        report["simulation"] = bench_simulations(args.sims, "smollm2" if args.with_generator else (
            False if args.generator == "none" else args.generator))
    if args.generator_dtypes:
        report["generator_dtypes"] = bench_generator_dtypes(max(args.sims, 1), args.generator_dtypes.split(","))
    if not args.skip_fit:
        report["fit"] = bench_fit(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
