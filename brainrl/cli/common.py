"""Shared CLI pieces: reading texts, choosing the brain pipeline, batching with a progress bar."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Sequence


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("brain pipeline")
    group.add_argument("--model", default="synthetic", help="brain model: synthetic (offline default), tribe, remote")
    group.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="brain model argument, e.g. seed=1 or url=http://127.0.0.1:8765 (repeatable)")
    group.add_argument("--speech", default="espeak", help="speech engine: espeak (offline default), gtts-whisperx")
    group.add_argument("--cache-dir", default=None, help="map cache folder ('' disables; default $BRAINRL_CACHE/maps)")
    group.add_argument("--batch-size", type=int, default=32, help="texts per batch")


def parse_key_values(items: Sequence[str]) -> dict:
    """``["seed=1", "url=http://x"]`` -> ``{"seed": 1, "url": "http://x"}`` (values parsed as YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"Expected KEY=VALUE, got {item!r}.")
        out[key.strip()] = yaml.safe_load(value)
    return out


def pipeline_from_args(args: argparse.Namespace):
    from brainrl.brain.pipeline import BrainPipeline, PipelineConfig

    config = PipelineConfig(speech=args.speech, model=args.model, model_kwargs=parse_key_values(args.model_arg),
                            cache_dir=args.cache_dir)
    return BrainPipeline(config)


def read_texts(texts: Sequence[str], file: str | None) -> list[str]:
    """Texts from the command line, or one per line (or a JSON list / JSONL with "text") from a file."""
    if file:
        path = Path(file)
        if not path.exists():
            raise FileNotFoundError(f"Text file {file!r} not found.")
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return [str(t) for t in json.loads(raw)]
        if path.suffix == ".jsonl":
            return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
        return [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise ValueError("Give one or more texts, or --file FILE with one text per line.")
    return list(texts)


def batches(items: Sequence, size: int, desc: str) -> Iterator[tuple[int, Sequence]]:
    """(offset, batch) pairs with a progress bar over items."""
    from tqdm.auto import tqdm

    size = max(1, size)
    with tqdm(total=len(items), desc=desc, unit="text", disable=len(items) <= size) as bar:
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            yield start, batch
            bar.update(len(batch))
