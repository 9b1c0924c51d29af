"""Prompts of the stimulus generator (θ, topic → five headlines) and of the inverse evaluator.

Written for brainrl (the paper shows its prompts only as figures). Two parts each: a system prompt
that says how every dimension shows in language and fixes the output format, and a user prompt with
the concrete request. The formats are what ``brainrl.sbi.simulation.parse`` accepts, nothing looser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from brainrl.sbi.simulation.prior import N_PARAMS, PARAM_NAMES

Messages = list[dict[str, str]]

N_HEADLINES = 5
#: what "roughly 10–20 words" means to the parser (a little slack on both sides)
MIN_WORDS, MAX_WORDS = 8, 24

#: how each dimension shows in a headline, low end → high end
DIMENSION_GUIDE: dict[str, tuple[str, str]] = {
    "valence": ("bad news: loss, failure, harm, negative words", "good news: success, relief, praise, positive words"),
    "arousal": ("calm, slow, routine events in muted wording", "urgent, dramatic events, intense verbs, exclamatory tone"),
    "dominance": ("actors are powerless, affected, at the mercy of events", "actors are in control, decisive, acting with authority"),
    "subjectivity": ("neutral reporting of verifiable facts", "opinion, judgement, evaluative adjectives, the writer's view"),
    "certainty": ("hedged: may, could, unclear, reportedly, questions", "definite: will, confirmed, proven, flat assertions"),
    "formality": ("casual, chatty, slang, contractions", "formal, official, precise institutional register"),
}

_BINS: tuple[tuple[float, str], ...] = ((0.2, "very low"), (0.4, "low"), (0.6, "moderate"), (0.8, "high"), (1.01, "very high"))


def verbal_bin(score: float) -> str:
    """The word the prompt uses beside a score: very low / low / moderate / high / very high."""
    if not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"scores must lie in [0, 1]; got {score}.")
    for upper, name in _BINS:
        if score < upper:
            return name
    return _BINS[-1][1]  # pragma: no cover


def _guide_lines() -> str:
    return "\n".join(f"- {name}: 0 = {low}; 1 = {high}." for name, (low, high) in DIMENSION_GUIDE.items())


GENERATOR_SYSTEM_PROMPT = f"""You write short news headlines whose language expresses six target properties, each scored from 0 to 1:
{_guide_lines()}
Express every property through word choice, tone and framing; never name the properties or the scores.

Output format (strict): exactly {N_HEADLINES} lines, numbered 1. to {N_HEADLINES}., one headline per line, each {10} to {20} words.
No title, no blank lines, no quotes, no explanations before or after."""


def generator_messages(theta: Sequence[float], topic: str) -> Messages:
    """Chat messages asking for one block of five headlines about ``topic`` with properties ``theta``."""
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (N_PARAMS,):
        raise ValueError(f"theta must have {N_PARAMS} values ({', '.join(PARAM_NAMES)}); got shape {theta.shape}.")
    scores = "\n".join(f"- {name}: {value:.2f} ({verbal_bin(value)})" for name, value in zip(PARAM_NAMES, theta))
    user = (
        f"Topic: {topic}\n"
        f"Target properties:\n{scores}\n"
        f"Write {N_HEADLINES} different news headlines about {topic}, each 10 to 20 words, numbered 1. to {N_HEADLINES}., "
        "one per line, and nothing else."
    )
    return [{"role": "system", "content": GENERATOR_SYSTEM_PROMPT}, {"role": "user", "content": user}]


HEADLINE_SYSTEM_PROMPT = f"""You write one short news headline whose language expresses six target properties, each scored from 0 to 1:
{_guide_lines()}
Express every property through word choice, tone and framing; never name the properties or the scores.

Output format (strict): one line with one headline of 10 to 20 words. No numbering, no quotes, no explanation."""


def headline_messages(theta: Sequence[float], topic: str, number: int = 1) -> Messages:
    """Chat messages asking for headline ``number`` (1..5) of a block, one per request: the
    ``per_headline`` mode for small local models that cannot keep a five-line format."""
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (N_PARAMS,):
        raise ValueError(f"theta must have {N_PARAMS} values ({', '.join(PARAM_NAMES)}); got shape {theta.shape}.")
    scores = "\n".join(f"- {name}: {value:.2f} ({verbal_bin(value)})" for name, value in zip(PARAM_NAMES, theta))
    user = (f"Topic: {topic}\nTarget properties:\n{scores}\n"
            f"Write news headline number {number} about {topic}: one line, 10 to 20 words, nothing else.")
    return [{"role": "system", "content": HEADLINE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


# -- few-shot, one headline per request: the style for small local models ---------------------------
#: five short verbal levels per dimension (the bins of ``verbal_bin``), in plain words a 135M model follows
THETA_WORDS: dict[str, tuple[str, str, str, str, str]] = {
    "valence": ("very bad news", "bad news", "mixed news", "good news", "very good news"),
    "arousal": ("very calm", "calm", "steady", "lively", "urgent and dramatic"),
    "dominance": ("people are helpless", "people are struggling", "people cope", "people take charge",
                  "people are firmly in control"),
    "subjectivity": ("strictly factual", "mostly factual", "slightly opinionated", "opinionated", "strongly opinionated"),
    "certainty": ("very uncertain (may, might, unclear)", "uncertain", "fairly sure", "sure", "completely certain"),
    "formality": ("very casual, slangy", "casual", "neutral register", "formal", "very formal, official"),
}

FEW_SHOT_SYSTEM_PROMPT = "You are a news editor. You answer with one news headline and nothing else."


@dataclass(frozen=True)
class FewShotExample:
    theta: tuple[float, ...]
    topic: str
    headline: str


#: brainrl's own examples, on topics outside the campaign's ten so the model cannot copy one as an answer
FEW_SHOT_EXAMPLES: tuple[FewShotExample, ...] = (
    FewShotExample((0.1, 0.9, 0.2, 0.3, 0.8, 0.7), "farming",
                   "Hailstorm flattens wheat fields overnight as farmers watch a year of work vanish within an hour"),
    FewShotExample((0.9, 0.2, 0.8, 0.8, 0.6, 0.1), "education",
                   "Our town's teachers totally nailed it again, and the new reading club is honestly the best thing going"),
    FewShotExample((0.5, 0.5, 0.5, 0.1, 0.1, 0.9), "transport",
                   "Officials state that the proposed rail link might reduce commuting times, although the assessment "
                   "remains preliminary"),
)


def describe_theta(theta: Sequence[float]) -> str:
    """θ in words, one level per dimension in the prior's order: 'very bad news; calm; ...'."""
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (N_PARAMS,):
        raise ValueError(f"theta must have {N_PARAMS} values ({', '.join(PARAM_NAMES)}); got shape {theta.shape}.")
    levels = [b for _, b in _BINS]
    return "; ".join(THETA_WORDS[name][levels.index(verbal_bin(value))] for name, value in zip(PARAM_NAMES, theta))


def _style_request(theta: Sequence[float], topic: str) -> str:
    return f"Topic: {topic}. Style: {describe_theta(theta)}. Headline:"


def style_headline_request(theta: Sequence[float], topic: str) -> str:
    """One user turn asking for one headline with θ in words (the levels of ``describe_theta``), for the
    θ-target trainers and validator, whose prompts are one user turn after ``FEW_SHOT_SYSTEM_PROMPT``:
    'Write one news headline about sports. Style: very bad news; calm; ...'."""
    return f"Write one news headline about {topic}. Style: {describe_theta(theta)}."


def few_shot_headline_messages(theta: Sequence[float], topic: str) -> Messages:
    """One headline per request, θ in words, after three worked examples (``few_shot`` writer option).

    Every request of a campaign shares the system prompt and the examples, so a local generator with
    ``prefix_cache`` computes them once; only the last user turn differs."""
    messages: Messages = [{"role": "system", "content": FEW_SHOT_SYSTEM_PROMPT}]
    for example in FEW_SHOT_EXAMPLES:
        messages += [{"role": "user", "content": _style_request(example.theta, example.topic)},
                     {"role": "assistant", "content": example.headline}]
    return [*messages, {"role": "user", "content": _style_request(theta, topic)}]


def retry_messages(messages: Messages, bad_output: str, reason: str, what: str) -> Messages:
    """The conversation so far plus a correction naming the violation, for the next attempt."""
    return [
        *messages,
        {"role": "assistant", "content": bad_output},
        {"role": "user", "content": f"That answer broke the required format: {reason}. Reply again with {what} and nothing else."},
    ]


EVALUATOR_SYSTEM_PROMPT = f"""You rate a block of news headlines on six properties, each a number from 0 to 1:
{_guide_lines()}
Rate the block as a whole.

Output format (strict): exactly {N_PARAMS} lines, in this order, each "name: number" with a number between 0 and 1:
{chr(10).join(f"{name}: <number>" for name in PARAM_NAMES)}
Nothing else."""


def evaluator_messages(headlines: Sequence[str] | str) -> Messages:
    """Chat messages asking the inverse evaluator to score one block of headlines."""
    block = headlines if isinstance(headlines, str) else "\n".join(f"{i}. {h}" for i, h in enumerate(headlines, 1))
    if not block.strip():
        raise ValueError("the headline block to rate is empty.")
    user = f"Headlines:\n{block}\n\nRate the six properties of this block."
    return [{"role": "system", "content": EVALUATOR_SYSTEM_PROMPT}, {"role": "user", "content": user}]


FEW_SHOT_EVALUATOR_SYSTEM_PROMPT = (
    "You rate news headlines. Answer with six lines, each 'name: number' with a number from 0 to 1, "
    f"in this order: {', '.join(PARAM_NAMES)}. Nothing else.")

#: brainrl's own rated blocks (topics outside the campaign's ten): one grim/urgent/formal, one upbeat/calm/casual
FEW_SHOT_EVALUATOR_EXAMPLES: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = (
    (("Hailstorm flattens wheat fields overnight as farmers watch a year of work vanish",
      "Grain prices surge after storms destroy harvests across three provinces",
      "Ministry confirms emergency aid for farms ruined by record hail",
      "Rural families face ruin as insurers reject storm damage claims",
      "Officials warn that crop losses will exceed all previous estimates"),
     (0.1, 0.85, 0.2, 0.3, 0.8, 0.75)),
    (("Our town's teachers totally nailed it again with the new reading club",
      "Kids are loving the school garden and honestly who can blame them",
      "Parents say the new library hours are the best thing going this year",
      "Local school rocks the science fair, maybe its best showing yet",
      "The new bus route to school is a small win, and we'll take it"),
     (0.85, 0.3, 0.75, 0.8, 0.55, 0.15)),
)


def _scores_text(values: Sequence[float]) -> str:
    return "\n".join(f"{name}: {value:.2f}" for name, value in zip(PARAM_NAMES, values))


def _rating_request(headlines: Sequence[str] | str) -> str:
    block = headlines if isinstance(headlines, str) else "\n".join(f"- {h}" for h in headlines)
    if not block.strip():
        raise ValueError("the headline block to rate is empty.")
    return f"Headlines:\n{block}\nScores:"


def few_shot_evaluator_messages(headlines: Sequence[str] | str) -> Messages:
    """The inverse evaluator's request after two worked ratings (for small local models); the reply
    format is the same six ``name: number`` lines ``parse_scores`` accepts."""
    messages: Messages = [{"role": "system", "content": FEW_SHOT_EVALUATOR_SYSTEM_PROMPT}]
    for block, scores in FEW_SHOT_EVALUATOR_EXAMPLES:
        messages += [{"role": "user", "content": _rating_request(block)},
                     {"role": "assistant", "content": _scores_text(scores)}]
    return [*messages, {"role": "user", "content": _rating_request(headlines)}]
