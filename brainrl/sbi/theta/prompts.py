"""(θ*, topic) prompt datasets for θ-target training and validation.

Each row asks the generator for five headlines about ``topic`` whose language expresses ``theta_target``,
with the generator prompts of ``brainrl.sbi.simulation.prompts`` (system prompt + user prompt). The user prompt is
stored as one line (its lines joined by spaces) so the trainers' one-prompt-per-line files can carry it.

JSONL format (one object per line)::

    {"id": 0, "prompt": "Topic: weather Target properties: - valence: 0.64 (high) ...",
     "theta_target": [0.64, 0.27, 0.81, 0.05, 0.55, 0.33], "topic": "weather", "seed": 0}

Rewards find a row by its prompt (``prompt_key``), so a trainer that passes only prompt texts still
scores against the right θ*; a trainer that passes dataset columns gives ``theta_target``/``topic`` directly.
θ* comes from its own random stream (``THETA_STREAM``), never the campaign's, so training and validation
targets are not the posterior's training θ; different seeds give disjoint draws.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainrl.sbi.simulation.prior import N_PARAMS, PARAM_NAMES, item_rng
from brainrl.sbi.simulation.prompts import (
    _BINS,
    FEW_SHOT_SYSTEM_PROMPT,
    GENERATOR_SYSTEM_PROMPT,
    generator_messages,
    style_headline_request,
)
from brainrl.sbi.simulation.topics import TOPICS, topic_for_index

#: random stream of θ* draws (campaigns draw θ from stream 0)
THETA_STREAM = 11
THETA_COLUMN = "theta_target"
TOPIC_COLUMN = "topic"
SYSTEM_PROMPT = GENERATOR_SYSTEM_PROMPT
#: prompt styles: ``block`` asks for five numbered headlines with θ* as numbers and bins (the API
#: campaigns' prompt); ``headline`` asks for one short headline with θ* in words, five levels per dimension
#: (the SmolLM2 campaign's wording, which a 135M model follows better than numbers; θ* is the centre of
#: the level shown, so the prompt states θ* exactly), after a one-line system prompt (short prompts keep
#: a CPU training step cheap)
PROMPT_STYLES = ("block", "headline")
#: the centre of each verbal level (very low .. very high)
BIN_CENTRES = tuple(round((low + min(high, 1.0)) / 2, 2) for low, high in
                    zip((0.0, *(b for b, _ in _BINS[:-1])), (b for b, _ in _BINS)))


def prompt_key(prompt: Any) -> str:
    """The lookup key of a prompt: its user text with whitespace collapsed. Accepts a string or chat
    messages (the last user turn, as TRL passes conversational prompts)."""
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError("a chat prompt has no user message to identify its θ* row.")
        prompt = users[-1]
        if isinstance(prompt, list):  # content parts
            prompt = " ".join(p.get("text", "") for p in prompt if isinstance(p, dict))
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string or chat messages; got {type(prompt).__name__}.")
    return " ".join(prompt.split())


def theta_prompt(theta: Sequence[float], topic: str) -> str:
    """The one-line user prompt for (θ*, topic), from ``generator_messages``."""
    return prompt_key(generator_messages(theta, topic)[1]["content"])


def system_prompt_for(style: str) -> str:
    """The system prompt that goes with a prompt style (recipes' ``data.system_prompt``)."""
    _check_style(style)
    return GENERATOR_SYSTEM_PROMPT if style == "block" else FEW_SHOT_SYSTEM_PROMPT


def _check_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown θ-prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}.")


def build_theta_prompts(n: int, seed: int = 0, topics: Sequence[str] = TOPICS, style: str = "block"
                        ) -> list[dict[str, Any]]:
    """``n`` rows of (prompt, θ*, topic); θ* ~ U(0, 1)^6 per row from (seed, row), topics round-robin.
    ``style="headline"`` snaps θ* to the centre of its verbal level (the words are all the prompt shows)."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    _check_style(style)
    topics = tuple(topics)
    rows = []
    for i in range(int(n)):
        theta = np.round(item_rng(seed, i, stream=THETA_STREAM).uniform(0.0, 1.0, size=N_PARAMS), 2)  # as the prompt shows it
        topic = topic_for_index(i, topics)
        if style == "headline":
            theta = np.array([BIN_CENTRES[min(int(v * len(BIN_CENTRES)), len(BIN_CENTRES) - 1)] for v in theta])
            prompt = style_headline_request(theta, topic)
        else:
            prompt = theta_prompt(theta, topic)
        rows.append({"id": i, "prompt": prompt, THETA_COLUMN: [float(v) for v in theta],
                     TOPIC_COLUMN: topic, "seed": int(seed), **({"style": style} if style != "block" else {})})
    return rows


def check_theta(value: Any, where: str = THETA_COLUMN) -> np.ndarray:
    """A θ* value as (6,) float64, or a ValueError naming the column and the expected form."""
    try:
        theta = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        theta = None
    if theta is None or theta.shape != (N_PARAMS,) or not np.all(np.isfinite(theta)) \
            or np.any(theta < 0) or np.any(theta > 1):
        raise ValueError(f"column {where!r} must hold {N_PARAMS} numbers in [0, 1] ({', '.join(PARAM_NAMES)}); "
                         f"got {value!r}.")
    return theta


def write_theta_prompts(rows: Sequence[dict[str, Any]], path: str | Path, text_path: str | Path | None = None) -> Path:
    """Write rows as JSONL; optionally also the trainers' plain prompt file (one prompt per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    if text_path is not None:
        header = f"# θ-target prompts (one per line); their θ* and topic are in {path.name}\n"
        Path(text_path).write_text(header + "".join(r["prompt"] + "\n" for r in rows), encoding="utf-8")
    return path


def read_theta_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a θ-prompt JSONL file, each checked (prompt, theta_target, topic present and valid)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"θ-prompt file {str(path)!r} not found; write one with `brainrl theta-prompts`.")
    from brainrl.configs import read_jsonl

    rows = []
    for number, row in read_jsonl(path):
        for column in ("prompt", THETA_COLUMN, TOPIC_COLUMN):
            if column not in row:
                raise ValueError(f"{path}:{number} has no {column!r} column; rows need prompt, theta_target, topic.")
        check_theta(row[THETA_COLUMN], f"{path}:{number} {THETA_COLUMN}")
        rows.append(row)
    if not rows:
        raise ValueError(f"θ-prompt file {path} has no rows.")
    return rows


def prompt_table(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """prompt_key → row; two rows with the same prompt but different θ* are an error."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = prompt_key(row["prompt"])
        if key in table and not math.isclose(0.0, float(np.abs(np.subtract(table[key][THETA_COLUMN],
                                                                            row[THETA_COLUMN])).max())):
            raise ValueError(f"two rows share the prompt {key[:60]!r}… with different θ*; prompts must identify θ*.")
        table[key] = row
    return table
