"""Strict parsers of generator and evaluator outputs; a violation raises ``FormatViolation`` with the
reason, which the caller logs and answers with a bounded retry."""

from __future__ import annotations

import math
import re
from typing import Sequence

from brainrl.sbi.simulation.prior import PARAM_NAMES
from brainrl.sbi.simulation.prompts import MAX_WORDS, MIN_WORDS, N_HEADLINES


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


# -- lenient cleaning for small local generators (per_headline mode, cleaning="lenient") ---------------
_LEAD_MARKUP = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022#>]+)\s*")
_LABEL = re.compile(r"^\s*(?:news\s+)?(?:headline|title)\s*\d*\s*[:\-\u2013\u2014]\s*", re.IGNORECASE)
#: a sentence ends at . ! ? after two lower-case letters/digits ("U.S." and "Dr." do not end one)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9%][a-z0-9%][.!?])\s+")
#: words that show the assistant talking about its task instead of writing a headline
_META = re.compile(r"\b(?:headlines?|format|answers?|here\s+is|here's|here\s+are|sure|certainly|"
                   r"as\s+an\s+ai|news\s+article|topic\s*:|style\s*:|premise)\b", re.IGNORECASE)
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll)\b")
#: a line ending on one of these was cut off by the token limit (or is not a complete headline)
_DANGLING = frozenset("a an the and or but of to in on at for with by from as that which who whose their its "
                      "his her our your is are was were be been has have had will would could can may might "
                      "not no into than then so if while very more most being it's they're there's that's "
                      "we're he's she's".split())
MIN_UNIQUE_WORD_FRACTION = 0.7
MAX_EXAMPLE_OVERLAP = 0.5


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


_CLAUSE_END = re.compile(r"\s*(?:[,;:]|\s[\u2013\u2014-])\s")


def _trim_to_clause(sentence: str, min_words: int, max_words: int) -> str:
    """The longest run of leading clauses (cut at , ; : or a dash) with at most ``max_words`` words;
    what follows the cut is dropped whole, so a reply cut off by the token limit loses only its tail."""
    best = sentence
    for match in _CLAUSE_END.finditer(sentence):
        head = sentence[:match.start()]
        if len(_words(head)) > max_words:
            break
        best = head
    return best if len(_words(best)) >= min_words else sentence


def clean_headline(text: str, min_words: int = 5, max_words: int = 40, avoid: Sequence[str] = ()) -> str:
    """The headline in a small model's reply, or ``FormatViolation`` saying why there is none.

    Lenient about packaging, strict about content: takes the first non-empty line, strips numbering,
    bullets, markdown, a "Headline:" label and quotes, keeps the first sentence (a sentence longer than
    ``max_words`` is cut back to its leading clauses, see ``_trim_to_clause``); then rejects meta-text
    (the model talking about headlines, formats, answers; "Sure", "Here is"; first-person assistant
    voice), a sentence cut off mid-way, degenerate repetition, a near-copy (word Jaccard >= 0.5) of a
    text in ``avoid`` (the few-shot examples), and anything outside ``min_words``..``max_words``.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise FormatViolation("empty reply")
    line = _LEAD_MARKUP.sub("", lines[0].replace("**", "").replace("__", ""))
    line = _LABEL.sub("", line).strip(_QUOTES + " ")
    headline = " ".join(_SENTENCE_END.split(line, maxsplit=1)[0].split()).strip(_QUOTES + " ")
    if len(_words(headline)) > max_words:
        headline = _trim_to_clause(headline, min_words, max_words)
    words = _words(headline)
    if _META.search(headline):
        raise FormatViolation(f"meta-text instead of a headline: {headline[:60]!r}")
    if _FIRST_PERSON.search(headline):
        raise FormatViolation(f"first-person assistant voice, not a headline: {headline[:60]!r}")
    if not min_words <= len(words) <= max_words:
        raise FormatViolation(f"the headline has {len(words)} words (allowed {min_words}-{max_words})")
    if words[-1] in _DANGLING and headline[-1:] not in ".!?":
        raise FormatViolation(f"the headline stops mid-sentence at {words[-1]!r}")
    if len(set(words)) < MIN_UNIQUE_WORD_FRACTION * len(words):
        raise FormatViolation("the headline repeats its own words")
    for example in avoid:
        other = set(_words(example))
        if len(set(words) & other) >= MAX_EXAMPLE_OVERLAP * len(set(words) | other):
            raise FormatViolation("the headline copies a few-shot example")
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
