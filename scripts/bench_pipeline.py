"""Benchmark: ~100-word completions per second through speech + synthetic brain model + ROI reward.

Measured after a warm-up, with the map cache off (every text is new, as in RL), on this machine; the
machine's description (CPU model, load average before and after) is printed with the figure. Variants run
side by side in one process so their ratio is meaningful: 1 and 2 speech worker processes, batch sizes 8
and 32, and at batch 32 the pipeline's speech/prediction overlap off (``speech_chunk: 0``, the whole
batch spoken first) and on (``speech_chunk: 8``, the shipped default).

    python scripts/bench_pipeline.py [--texts 96] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

SUBJECTS = ["The engineers", "A young reporter", "The old mayor", "Our neighbours", "The committee", "A quiet student"]
VERBS = ["described", "questioned", "remembered", "celebrated", "examined", "announced"]
OBJECTS = ["the flooded bridge", "a strange letter", "the new library", "the winter market", "an unfinished song",
           "the morning train"]
TAILS = ["which had been promised for years", "although nobody believed it", "while the rain kept falling",
         "because the city needed it", "before the lights went out", "as the crowd slowly gathered"]


def make_texts(n: int, words: int = 100, seed: int = 0) -> list[str]:
    """Deterministic, varied English texts of about ``words`` words (no two alike)."""
    import random

    rng = random.Random(seed)
    texts = []
    for i in range(n):
        sentences: list[str] = []
        while sum(len(s.split()) for s in sentences) < words:
            sentences.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}, "
                             f"{rng.choice(TAILS)}, on day {rng.randint(1, 365)}.")
        texts.append(f"Item {i}. " + " ".join(sentences))
    return texts


def machine() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        fields = {"model name": "cpu", "cpu family": "cpu_family", "model": "cpu_model", "cpu MHz": "cpu_mhz"}
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            name = fields.get(key.strip())
            if name and name not in info:
                info[name] = value.strip()
            if not line.strip():  # the first processor's block is enough
                break
        info["hypervisor"] = "hypervisor" in open("/proc/cpuinfo").read()
        info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (OSError, ValueError):
        pass
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    return info


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds of this process and ``pids`` (Linux /proc; None elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return total


def _pids(pipeline) -> list[int]:
    pool = getattr(pipeline.speech, "_pool", None)
    return [os.getpid()] + (list(getattr(pool, "_processes", {}) or {}) if pool is not None else [])


def run(n_texts: int, batch_size: int, workers: int, speech_chunk: int) -> dict:
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig
    from brainrl.rewards import ROIReward

    config = PipelineConfig(cache_dir="", memory_items=0, speech_kwargs={"workers": workers},
                            speech_chunk=speech_chunk)
    pipeline = BrainPipeline(config)
    reward = ROIReward("broca", "minus_global").use_pipeline(pipeline)
    reward(None, make_texts(batch_size, seed=999))  # warm-up: loads MiniLM, mesh, starts workers
    texts = make_texts(n_texts, seed=workers * 1000 + batch_size)
    pids = _pids(pipeline)
    cpu0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    values = []
    for start in range(0, n_texts, batch_size):
        values += reward(None, texts[start:start + batch_size])
    seconds = time.perf_counter() - t0
    cpu1 = cpu_seconds(pids)
    pipeline.close()
    pipeline.speech.close() if hasattr(pipeline.speech, "close") else None
    assert all(v is not None for v in values), reward.last_failures
    return {"workers": workers, "batch_size": batch_size, "speech_chunk": speech_chunk, "texts": n_texts,
            "mean_words": sum(len(t.split()) for t in texts) / n_texts,
            "seconds": round(seconds, 3), "texts_per_second": round(n_texts / seconds, 2),
            # CPU time of this process and its speech workers: what the work costs whatever else runs
            "cpu_ms_per_text": None if cpu0 is None or cpu1 is None else round(1000 * (cpu1 - cpu0) / n_texts, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=96)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    info = machine()
    info["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    print("machine:", json.dumps(info))
    variants = [(w, bs, chunk) for w in (1, 2) for bs, chunk in ((8, 0), (32, 0), (32, 8))]
    rows = [run(args.texts, bs, w, chunk) for w, bs, chunk in variants]
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(f"{'speech workers':>14} {'batch':>6} {'overlap':>8} {'words/text':>10} {'texts/s':>8} {'CPU ms/text':>11}")
    for row in rows:
        overlap = f"chunk {row['speech_chunk']}" if row["speech_chunk"] else "off"
        cpu = "n/a" if row["cpu_ms_per_text"] is None else f"{row['cpu_ms_per_text']:.1f}"
        print(f"{row['workers']:>14} {row['batch_size']:>6} {overlap:>8} {row['mean_words']:>10.0f} "
              f"{row['texts_per_second']:>8.1f} {cpu:>11}")
    best = max(rows, key=lambda r: r["texts_per_second"])
    print(f"best: {best['texts_per_second']:.1f} completions/s (target >= 20/s) with {best['workers']} speech "
          f"worker(s), batch {best['batch_size']}, speech_chunk {best['speech_chunk']}; load average "
          f"{info['load_average_before']} before, {info['load_average_after']} after (other jobs on this machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
