"""Strict parsers of generator and evaluator outputs; a violation raises ``FormatViolation`` with the
reason, which the caller logs and answers with a bounded retry."""

from __future__ import annotations

import math
import re
from typing import Sequence

from brainrl.sbi.prior import PARAM_NAMES
from brainrl.sbi.prompts import MAX_WORDS, MIN_WORDS, N_HEADLINES


class FormatViolation(ValueError):
    """An output that does not follow the required format; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s+(.*\S)\s*$")
_QUOTES = "\"'“”‘’`*"


def parse_headlines(
    text: str, n: int = N_HEADLINES, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS
) -> list[str]:
    """Exactly ``n`` non-empty lines numbered 1..n, each a headline of ``min_words``..``max_words`` words.

    Surrounding quotes/markdown emphasis on a headline are stripped; anything else (a preamble, a
    missing or repeated number, a blank headline, a duplicate in the block) is a violation.
    """
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    if len(lines) != n:
        raise FormatViolation(f"expected {n} numbered lines, got {len(lines)}")
    headlines = []
    for expected, line in enumerate(lines, 1):
        match = _NUMBERED.match(line)
        if not match:
            raise FormatViolation(f"line {expected} is not numbered like '{expected}. headline': {line[:60]!r}")
        if int(match.group(1)) != expected:
            raise FormatViolation(f"line {expected} is numbered {match.group(1)}")
        headline = " ".join(match.group(2).strip(_QUOTES + " ").split())
        words = len(headline.split())
        if not min_words <= words <= max_words:
            raise FormatViolation(f"headline {expected} has {words} words (allowed {min_words}-{max_words})")
        headlines.append(headline)
    if len(set(headlines)) != len(headlines):
        raise FormatViolation("the block repeats a headline")
    return headlines


def parse_single_headline(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str:
    """Exactly one non-empty line, a headline of ``min_words``..``max_words`` words (quotes stripped)."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    if len(lines) != 1:
        raise FormatViolation(f"expected one line with one headline, got {len(lines)} lines")
    headline = " ".join(lines[0].strip(_QUOTES + " ").split())
    if _NUMBERED.match(headline):
        raise FormatViolation("the headline is numbered; write it without a number")
    words = len(headline.split())
    if not min_words <= words <= max_words:
        raise FormatViolation(f"the headline has {words} words (allowed {min_words}-{max_words})")
    return headline


_SCORE_LINE = re.compile(r"^\s*([A-Za-z]+)\s*:\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def parse_scores(text: str, names: Sequence[str] = PARAM_NAMES) -> list[float]:
    """Exactly one ``name: number`` line per dimension, in order, each number finite and in [0, 1]."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    if len(lines) != len(names):
        raise FormatViolation(f"expected {len(names)} 'name: number' lines, got {len(lines)}")
    scores = []
    for name, line in zip(names, lines):
        match = _SCORE_LINE.match(line)
        if not match:
            raise FormatViolation(f"line for {name} is not 'name: number': {line[:60]!r}")
        if match.group(1).lower() != name:
            raise FormatViolation(f"expected {name!r} on this line, got {match.group(1)!r}")
        value = float(match.group(2))
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise FormatViolation(f"{name} score {match.group(2)} is outside [0, 1]")
        scores.append(value)
    return scores


def block_text(headlines: Sequence[str]) -> str:
    """The block as one spoken text: each headline closed by a full stop so speech pauses between them."""
    parts = []
    for headline in headlines:
        headline = headline.strip()
        parts.append(headline if headline[-1:] in ".!?" else headline + ".")
    return " ".join(parts)
