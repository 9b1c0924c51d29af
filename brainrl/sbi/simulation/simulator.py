"""θ, topic → one block of five unique headlines, through a chat generator with bounded retries.

Format violations and headlines already used in the split are both answered by a retry: with
``feedback`` it shows the generator its bad answer and the reason (for capable models), without it the
same request is resampled with a new seed (small models tend to echo a correction back). After
``max_attempts`` the item is ``Failed`` with the last reason (logged), never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from brainrl.brain.base import Failed
from brainrl.provenance import content_hash
from brainrl.sbi.simulation.generators import ChatGenerator
from brainrl.sbi.simulation.parse import FormatViolation, clean_headline, parse_headlines, parse_single_headline
from brainrl.sbi.simulation.prompts import (FEW_SHOT_EXAMPLES, MAX_WORDS, MIN_WORDS, N_HEADLINES, few_shot_headline_messages,
                                 generator_messages, headline_messages, retry_messages)

log = logging.getLogger(__name__)


def attempt_seed(seed: int, index: int, attempt: int) -> int:
    """Sampling seed of one attempt at one item, independent of batch layout."""
    return int(content_hash({"seed": seed, "index": index, "attempt": attempt}, length=15), 16)


def ask_until_parsed(generator: ChatGenerator, conversations: dict[Hashable, list], seed_of: Callable[[Any, int], int],
                     parse: Callable[[Any, str], Any], max_attempts: int, retry: Callable[[Any, str, str], list] | None,
                     label: Callable[[Any], str]) -> tuple[dict[Any, Any], dict[Any, str]]:
    """Ask ``generator`` once per pending key per attempt, in one batch, until ``parse(key, reply)``
    accepts the reply (it raises ``FormatViolation`` otherwise).

    ``retry(key, reply, reason)`` gives the conversation for the next attempt (feedback), or, when None,
    the same conversation is resampled with a new seed. Returns (accepted values, last reason per key that
    never parsed); ``conversations`` is updated in place."""
    accepted: dict[Any, Any] = {}
    reasons: dict[Any, str] = {}
    pending = list(conversations)
    for attempt in range(max_attempts):
        if not pending:
            break
        replies = generator.generate([conversations[k] for k in pending], [seed_of(k, attempt) for k in pending])
        if len(replies) != len(pending):
            raise RuntimeError(f"generator returned {len(replies)} replies for {len(pending)} conversations")
        still = []
        for key, reply in zip(pending, replies):
            if isinstance(reply, Failed):
                reasons[key] = reply.reason
                still.append(key)
                continue
            try:
                accepted[key] = parse(key, reply)
            except FormatViolation as err:
                reasons[key] = err.reason
                log.debug("%s attempt %d rejected: %s", label(key), attempt + 1, err.reason)  # --verbose shows each
                if retry is not None:
                    conversations[key] = retry(key, reply, err.reason)
                still.append(key)
        pending = still
    return accepted, {key: reasons.get(key, "unknown") for key in pending}


@dataclass
class HeadlineRequest:
    index: int
    theta: np.ndarray
    topic: str


@dataclass
class HeadlineWriter:
    """Asks ``generator`` for blocks and enforces format and exact-match uniqueness within ``seen``."""

    generator: ChatGenerator
    max_attempts: int = 4
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    feedback: bool = True  # show the generator its violation on the retry
    #: "block": one request returns all five numbered headlines (the paper's setup);
    #: "per_headline": five one-line requests per item, for small models that cannot keep the block format
    mode: str = "block"
    #: per_headline only: ask with θ in words after three worked examples (``few_shot_headline_messages``)
    few_shot: bool = False
    #: "strict": the reply must be exactly the headline (``parse_single_headline``/``parse_headlines``);
    #: "lenient" (per_headline only): ``clean_headline`` strips packaging and rejects meta-text
    cleaning: str = "strict"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; got {self.max_attempts}.")
        if self.mode not in ("block", "per_headline"):
            raise ValueError(f"writer mode must be 'block' or 'per_headline'; got {self.mode!r}.")
        if self.cleaning not in ("strict", "lenient"):
            raise ValueError(f"writer cleaning must be 'strict' or 'lenient'; got {self.cleaning!r}.")
        if self.mode == "block" and (self.few_shot or self.cleaning != "strict"):
            raise ValueError("few_shot and cleaning='lenient' are per_headline options; block mode parses strictly. "
                             "Set mode: per_headline or drop them.")

    def _headline_conversation(self, request: "HeadlineRequest", number: int):
        if self.few_shot:
            return few_shot_headline_messages(request.theta, request.topic)
        return headline_messages(request.theta, request.topic, number)

    def _parse_one(self, reply: str) -> str:
        if self.cleaning == "lenient":
            avoid = [e.headline for e in FEW_SHOT_EXAMPLES] if self.few_shot else ()
            return clean_headline(reply, self.min_words, self.max_words, avoid)
        return parse_single_headline(reply, self.min_words, self.max_words)

    def write(self, requests: Sequence[HeadlineRequest], seed: int, seen: set[str]) -> list[list[str] | Failed]:
        """One block (five headlines) or ``Failed`` per request, in order. Adds accepted headlines to ``seen``."""
        if self.mode == "per_headline":
            return self._write_per_headline(requests, seed, seen)
        return self._write_blocks(requests, seed, seen)

    def _write_per_headline(self, requests: Sequence[HeadlineRequest], seed: int,
                            seen: set[str]) -> list[list[str] | Failed]:
        units = [(i, slot) for i in range(len(requests)) for slot in range(N_HEADLINES)]
        conversations = {u: self._headline_conversation(requests[u[0]], u[1] + 1) for u in units}
        taken = set(seen)  # also blocks headlines accepted earlier in this batch

        def parse(unit, reply: str) -> str:
            headline = self._parse_one(reply)
            if headline in taken:
                raise FormatViolation(f"headline already used in this split: {headline!r}")
            taken.add(headline)
            return headline

        def retry(unit, reply: str, reason: str):
            return retry_messages(self._headline_conversation(requests[unit[0]], unit[1] + 1), reply, reason,
                                  "one new headline on one line")

        accepted, failed = ask_until_parsed(
            self.generator, conversations, lambda u, a: attempt_seed(seed, requests[u[0]].index * N_HEADLINES + u[1], a),
            parse, self.max_attempts, retry if self.feedback else None,
            lambda u: f"item {requests[u[0]].index} headline {u[1] + 1}")
        results: list[list[str] | Failed] = []
        for i in range(len(requests)):
            slots = [slot for j, slot in failed if j == i]
            if slots:
                reason = (f"headline {slots[0] + 1}: no valid answer after {self.max_attempts} attempts; "
                          f"last: {failed[(i, slots[0])]}")
                log.warning("item %d failed: %s", requests[i].index, reason)
                results.append(Failed(reason))
            else:
                block = [accepted[(i, slot)] for slot in range(N_HEADLINES)]
                seen.update(block)
                results.append(block)
        return results

    def _write_blocks(self, requests: Sequence[HeadlineRequest], seed: int, seen: set[str]) -> list[list[str] | Failed]:
        conversations = {i: generator_messages(r.theta, r.topic) for i, r in enumerate(requests)}

        def parse(i: int, reply: str) -> list[str]:
            headlines = parse_headlines(reply, N_HEADLINES, self.min_words, self.max_words)
            used = [h for h in headlines if h in seen]
            if used:
                raise FormatViolation(f"headline already used in this split: {used[0]!r}")
            seen.update(headlines)
            return headlines

        def retry(i: int, reply: str, reason: str):
            return retry_messages(generator_messages(requests[i].theta, requests[i].topic), reply, reason,
                                  f"exactly {N_HEADLINES} new numbered headlines")

        accepted, failed = ask_until_parsed(
            self.generator, conversations, lambda i, a: attempt_seed(seed, requests[i].index, a), parse,
            self.max_attempts, retry if self.feedback else None, lambda i: f"item {requests[i].index}")
        results: list[list[str] | Failed] = []
        for i in range(len(requests)):
            if i in failed:
                reason = f"no valid block after {self.max_attempts} attempts; last: {failed[i]}"
                log.warning("item %d failed: %s", requests[i].index, reason)
                results.append(Failed(reason))
            else:
                results.append(accepted[i])
        return results
