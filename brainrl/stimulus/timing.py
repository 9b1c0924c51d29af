"""Word timings from partial evidence: every whitespace token of a text gets a start and a duration.

Speech engines know the times of most words (espeak WORD events, WhisperX alignments) but not all:
punctuation-only tokens are silent, aligners cannot time numerals. Dropping such tokens would change
what a brain model reads (TRIBE v2 feeds each word with its context), so untimed tokens get times
interpolated between their timed neighbours instead, and the result is made valid for every consumer:
starts strictly increasing, no overlaps, everything inside ``[0, duration]``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Sequence

from brainrl.stimulus.base import Word

#: Smallest gap between two word starts and smallest word duration, in seconds.
MIN_STEP = 1e-3

_TOKEN = re.compile(r"\S+")


def token_spans(text: str) -> list[tuple[int, int]]:
    """``(char_start, char_end)`` of every whitespace-separated token, punctuation attached."""
    return [(m.start(), m.end()) for m in _TOKEN.finditer(text)]


def token_of_char(char_starts: Sequence[int], char_index: int) -> int:
    """Index of the token holding ``char_index`` (given the tokens' sorted start offsets), or of the last
    token before it (0 if none): engines report positions inside or just after a token."""
    return max(bisect_right(char_starts, char_index) - 1, 0)


def build_words(
    text: str,
    starts: Sequence[float | None],
    ends: Sequence[float | None],
    duration: float,
    spans: Sequence[tuple[int, int]] | None = None,
) -> list[Word]:
    """One ``Word`` per token of ``text`` from per-token evidence.

    ``starts[i]`` is when token i is first heard (``None`` if unknown); ``ends[i]`` is when its sound
    stops, if known (``None``: it lasts until the next word starts). Timed starts that go backwards are
    treated as unknown. Unknown tokens are spread over the silence between their timed neighbours
    (after the previous word's end, before the next word's start), or share the previous word's span
    when there is no silence.
    """
    spans = list(spans) if spans is not None else token_spans(text)
    n = len(spans)
    if len(starts) != n or len(ends) != n:
        raise ValueError(f"Need one start and one end per token: {n} tokens, {len(starts)} starts, {len(ends)} ends.")
    if n == 0:
        return []
    if duration <= n * MIN_STEP:
        raise ValueError(f"Audio of {duration:.4f} s is too short to hold {n} words.")

    start = [None if s is None else min(max(float(s), 0.0), duration) for s in starts]
    end = [None if e is None else min(max(float(e), 0.0), duration) for e in ends]
    last = -1.0
    for i, s in enumerate(start):  # a timed start that goes backwards is not trusted
        if s is None:
            continue
        if s < last:
            start[i] = end[i] = None
        else:
            last = s

    timed = [i for i, s in enumerate(start) if s is not None]
    if not timed:  # nothing known: spread the tokens evenly over the audio
        step = duration / n
        start = [i * step for i in range(n)]
        end = [(i + 1) * step for i in range(n)]
    else:
        _fill_runs(start, end, timed, duration)

    for i in range(1, n):  # strictly increasing starts ...
        start[i] = max(start[i], start[i - 1] + MIN_STEP)
    start[n - 1] = min(start[n - 1], duration - MIN_STEP)
    for i in range(n - 2, -1, -1):  # ... that all fit inside the audio
        start[i] = min(start[i], start[i + 1] - MIN_STEP)

    words = []
    for i, (char_start, char_end) in enumerate(spans):
        limit = start[i + 1] if i + 1 < n else duration
        stop = end[i] if end[i] is not None and start[i] + MIN_STEP <= end[i] <= limit else limit
        words.append(Word(text[char_start:char_end], start[i], stop - start[i], char_start, char_end))
    return words


def _fill_runs(start: list, end: list, timed: list[int], duration: float) -> None:
    """Give every run of untimed tokens times inside the gap around it (in place)."""
    n = len(start)
    i = 0
    while i < n:
        if start[i] is not None:
            i += 1
            continue
        j = i
        while j < n and start[j] is None:
            j += 1
        prev, nxt = i - 1, j  # timed neighbours (prev = -1 or nxt = n when the run touches an edge)
        hi = start[nxt] if nxt < n else duration
        k = j - i
        if prev < 0:
            lo = 0.0
        elif end[prev] is not None and end[prev] <= hi - k * MIN_STEP * 10:
            lo = end[prev]  # the silence after the previous word
        else:  # no known silence: the previous word and the run share its span evenly
            lo = start[prev] + (hi - start[prev]) / (k + 1)
            end[prev] = lo
        step = (hi - lo) / k
        for k in range(i, j):
            start[k] = lo + (k - i) * step
            end[k] = start[k] + step
        i = j


def check_words(words: Sequence[Word], duration: float) -> None:
    """Raise ``ValueError`` unless words are in order, non-overlapping and inside ``[0, duration]``."""
    previous_start, previous_stop = -1.0, 0.0
    for w in words:
        if not (0.0 <= w.start and w.duration > 0 and w.stop <= duration + 1e-9):
            raise ValueError(f"Word {w.text!r} at {w.start:.4f}+{w.duration:.4f} s lies outside [0, {duration:.4f}].")
        if w.start <= previous_start or w.start < previous_stop - 1e-9:
            raise ValueError(f"Word {w.text!r} at {w.start:.4f} s starts before the previous word ends.")
        previous_start, previous_stop = w.start, w.stop
