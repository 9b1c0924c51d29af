"""Shared CLI pieces: reading texts, choosing the brain pipeline, batching with a progress bar."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator, Sequence


def folder_arg(value: str) -> str:
    """argparse type of an output folder: refused at parse time when it names an existing file."""
    if Path(value).exists() and not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a file; name a folder (it is created if missing).")
    return value


def file_arg(value: str) -> str:
    """argparse type of an output file: refused at parse time when it names an existing folder."""
    if Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is a folder; name a file, e.g. {Path(value) / 'out.png'}.")
    return value


def positive_int(value: str) -> int:
    """argparse type of a count that must be >= 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}.") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}.")
    return number


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("brain pipeline")
    group.add_argument("--model", default="synthetic", help="brain model: synthetic (offline default), tribe, remote")
    group.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="brain model argument, e.g. seed=1 or url=http://127.0.0.1:8765 (repeatable)")
    group.add_argument("--speech", default="espeak", help="speech engine: espeak (offline default), gtts-whisperx")
    group.add_argument("--cache-dir", default=None, help="map cache folder ('' disables; default $BRAINRL_CACHE/maps)")
    group.add_argument("--batch-size", type=positive_int, default=32, help="texts per batch")


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


def pipeline_config_from_args(args: argparse.Namespace):
    from brainrl.brain.pipeline import PipelineConfig

    return PipelineConfig(speech=args.speech, model=args.model, model_kwargs=parse_key_values(args.model_arg),
                          cache_dir=args.cache_dir)


def pipeline_from_args(args: argparse.Namespace):
    from brainrl.brain.pipeline import BrainPipeline

    return BrainPipeline(pipeline_config_from_args(args))


TEXT_FILE_HELP = ("a file of texts: one per line (blank lines and lines starting with # are skipped), "
                  "a .json list, or .jsonl with a 'text' field")


def read_texts(texts: Sequence[str], file: str | None) -> list[str]:
    """Texts from the command line, or from a file: one per line (blank lines and ``#`` comment lines
    skipped, as in prompt files), a JSON list, or JSONL with "text". A file with no texts is an error."""
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"Text file {file!r} not found." if not path.exists()
                                    else f"--file {file!r} is a folder; name a file of texts.")
        raw = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            found = [str(t) for t in json.loads(raw)]
        elif path.suffix == ".jsonl":
            found = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
        else:
            found = [line for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ValueError(f"--file {file!r} holds no texts (blank lines and # comment lines are skipped); "
                             "put one text per line.")
        return found
    if not texts:
        raise ValueError("Give one or more texts, or --file FILE with one text per line.")
    return list(texts)


def batches(items: Sequence, size: int, desc: str) -> Iterator[tuple[int, Sequence]]:
    """(offset, batch) pairs with a progress bar over items."""
    from tqdm.auto import tqdm

    size = max(1, size)
    # a bar even for one batch of many texts (a TRIBE batch takes a while); none for a handful
    with tqdm(total=len(items), desc=desc, unit="text", disable=len(items) < 8) as bar:
        for start in range(0, len(items), size):
            batch = items[start:start + size]
            yield start, batch
            bar.update(len(batch))
