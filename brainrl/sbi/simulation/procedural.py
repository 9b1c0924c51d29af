"""A θ-faithful procedural headline generator: slot templates filled from graded phrase pools.

Registered as ``procedural`` beside the LLM generators (``brainrl.sbi.simulation.generators.GENERATORS``), it speaks
the same chat protocol: it reads the topic and the six scores from the generator prompt of
``brainrl.sbi.simulation.prompts`` (block or per-headline form) and replies with five numbered headlines (or one).
Every dimension owns its own slot, so the six properties are expressed independently:

    [certainty lead] [formality subject] [certainty modal] [dominance verb] [topic object]
    [valence clause] [arousal manner] [subjectivity tail] [formality tail] [arousal punctuation]

For each headline and dimension a level 0..4 is drawn around 4θ (Gaussian jitter ``jitter``), so a
block of five expresses θ in graded proportions, not five bins. Replies are a pure function of the
request and the seed the writer passes (itself a function of (campaign seed, item id, attempt)), so a
campaign with this generator is reproducible whatever the batch size. About 10⁵ headlines per second
here: speech and the brain model bound a campaign, not this generator.

Its fidelity (how well θ can be read back from its text) is measured by the independent text judge
(``brainrl.sbi.judges.text``), see docs/sbi.md.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from brainrl.brain.base import Failed
from brainrl.sbi.simulation.prior import PARAM_NAMES
from brainrl.sbi.simulation.prompts import MAX_WORDS, N_HEADLINES, Messages

PROCEDURAL_VERSION = 1  # bump when any pool or rule changes (outputs change)

_SCORE = re.compile(r"-\s*(" + "|".join(PARAM_NAMES) + r")\s*:\s*([0-9]*\.?[0-9]+)")
_TOPIC = re.compile(r"Topic:\s*(.+?)\s*(?:\n|Target properties:|$)")
_ONE = re.compile(r"headline number \d+", re.IGNORECASE)


def parse_request(text: str) -> tuple[np.ndarray, str]:
    """(θ, topic) from a generator user prompt (``prompts.generator_messages``/``headline_messages``,
    multi-line or joined into one line as θ-prompt files store it). Raises ValueError when absent."""
    found = dict((name, float(value)) for name, value in _SCORE.findall(text or ""))
    topic = _TOPIC.search(text or "")
    missing = [name for name in PARAM_NAMES if name not in found]
    if missing or topic is None:
        raise ValueError(f"the prompt holds no {'topic' if topic is None else 'score for ' + ', '.join(missing)}; "
                         "expected the generator prompt format 'Topic: … - valence: 0.64 (high) …'.")
    theta = np.array([found[name] for name in PARAM_NAMES])
    if np.any(theta < 0) or np.any(theta > 1):
        raise ValueError(f"scores must lie in [0, 1]; got {theta.tolist()}.")
    return theta, topic.group(1).strip()


# -- phrase pools, level 0 (low end) .. 4 (high end) ------------------------------------------------
#: certainty: a lead before the subject and a modal before the verb
CERTAINTY_LEAD = (
    ("Unverified rumours hint that", "It remains deeply unclear whether", "Nobody can yet say if"),
    ("Early reports suggest", "Some sources claim", "It seems possible that"),
    ("", "", ""),
    ("Officials confirm that", "Records show", "It is now clear that"),
    ("It is official:", "Confirmed without doubt:", "It is certain:"),
)
CERTAINTY_MODAL = (
    ("might perhaps", "could possibly", "may or may not"),
    ("may", "might", "could"),
    ("are expected to", "plan to", "aim to"),
    ("will", "are set to", "will now"),
    ("will definitely", "are guaranteed to", "will certainly"),
)
#: formality: who acts, and a register tail
FORMALITY_SUBJECT = (
    ("folks round here", "the local gang", "our mates downtown", "regular guys and gals"),
    ("locals", "people in town", "neighbours", "the crowd"),
    ("city officials", "community groups", "local leaders", "organisers"),
    ("municipal officials", "regional authorities", "public agencies", "the district council"),
    ("the municipal administration", "national regulatory authorities", "the competent ministry",
     "the statutory oversight committee"),
)
FORMALITY_TAIL = (
    ("no kidding", "for real, y'know", "lol", "ain't that something"),
    ("pretty much", "and stuff", "kinda", ""),
    ("", "", "", ""),
    ("as announced", "per the notice", "as scheduled", ""),
    ("pursuant to applicable regulations", "in accordance with statutory provisions",
     "as stipulated by the relevant directive", "subject to formal ratification"),
)
#: dominance: how the actors relate to events
DOMINANCE_VERB = (
    ("be left powerless over", "be overwhelmed by", "helplessly give up on"),
    ("struggle to cope with", "be pushed around over", "scramble to keep up with"),
    ("respond to", "deal with", "work on"),
    ("take charge of", "steer", "lead the push on"),
    ("seize full control of", "decisively command", "firmly dictate"),
)
#: valence: what the outcome is like
VALENCE_CLAUSE = (
    ("amid devastating losses and grief", "as disaster and ruin spread", "after a tragic deadly failure"),
    ("despite mounting problems", "as losses slowly grow", "after a disappointing setback"),
    ("with mixed results", "as changes begin", "with some gains and some losses"),
    ("bringing welcome gains", "after a good start", "with encouraging progress"),
    ("in a joyful triumph", "bringing wonderful success and delight", "as everyone celebrates a brilliant win"),
)
#: arousal: manner and punctuation
AROUSAL_MANNER = (
    ("quietly and slowly", "in a calm routine way", "at a gentle pace"),
    ("calmly", "steadily", "without fuss"),
    ("", "", ""),
    ("quickly", "with growing urgency", "in a rush"),
    ("in a frantic panicked scramble", "explosively overnight", "in a wild dramatic frenzy"),
)
AROUSAL_END = ("", "", "", "!", "!!")
#: subjectivity: a factual attribution or the writer's own judgement
SUBJECTIVITY_TAIL = (
    ("according to published figures", "per the annual statistics", "data from the register show"),
    ("according to a report", "records indicate", ""),
    ("", "", ""),
    ("which seems rather remarkable", "a striking choice", "in a telling move"),
    ("and honestly I find it absolutely astonishing", "which is, in my view, utterly baffling",
     "a move I personally think is simply incredible"),
)
TOPIC_OBJECTS: dict[str, tuple[str, ...]] = {
    "weather": ("the storm season plan", "local rainfall forecasts", "the winter weather service",
                "the heatwave warning system", "flood barrier checks"),
    "sports": ("the regional football league", "the marathon route", "the new stadium lease",
               "youth swimming programmes", "the tennis club finals"),
    "infrastructure": ("the bridge repair schedule", "the new rail link", "road resurfacing works",
                       "the water main upgrade", "the harbour expansion"),
    "science": ("the telescope funding round", "the genome research lab", "the climate sensor network",
                "the particle physics trial", "the ocean survey mission"),
    "culture": ("the city museum exhibition", "the summer music festival", "the public library budget",
                "the film archive project", "the theatre season lineup"),
    "civic life": ("the town hall meeting", "the local election count", "the neighbourhood watch scheme",
                   "the new recycling rules", "the volunteer census drive"),
    "business": ("the quarterly earnings report", "the factory merger", "small business loans",
                 "the retail rent review", "the export trade deal"),
    "hazards": ("the chemical spill cleanup", "wildfire evacuation routes", "the earthquake drill",
                "the gas leak inspection", "landslide risk maps"),
    "technology": ("the new smartphone launch", "the data centre expansion", "the city broadband rollout",
                   "the software security patch", "the robotics start-up"),
    "health": ("the hospital waiting lists", "the flu vaccine campaign", "the new clinic opening",
               "the nurses staffing plan", "the mental health service"),
}
GENERIC_OBJECTS = ("the new local programme", "the regional project", "the public plan", "the annual review",
                   "the city initiative")


def _level(rng: np.random.Generator, value: float, jitter: float) -> int:
    return int(np.clip(np.rint(4.0 * value + rng.normal(0.0, jitter)), 0, 4))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def procedural_headline(theta: Sequence[float], topic: str, rng: np.random.Generator, jitter: float = 0.6) -> str:
    """One headline expressing ``theta`` about ``topic``, at most ``MAX_WORDS`` words."""
    val, aro, dom, subj, cert, form = (_level(rng, float(v), jitter) for v in theta)
    objects = TOPIC_OBJECTS.get(topic, GENERIC_OBJECTS)
    lead = _pick(rng, CERTAINTY_LEAD[cert])
    subject = _pick(rng, FORMALITY_SUBJECT[form])
    parts = [lead, subject if lead else subject[:1].upper() + subject[1:], _pick(rng, CERTAINTY_MODAL[cert]),
             _pick(rng, DOMINANCE_VERB[dom]), _pick(rng, objects), _pick(rng, VALENCE_CLAUSE[val]),
             _pick(rng, AROUSAL_MANNER[aro])]
    tails = [t for t in (_pick(rng, SUBJECTIVITY_TAIL[subj]), _pick(rng, FORMALITY_TAIL[form])) if t]

    def join() -> str:
        text = " ".join(p for p in parts if p)
        return text + (", " + ", ".join(tails) if tails else "")

    while len(join().split()) > MAX_WORDS and tails:  # rare: long lead + two long tails; drop tails
        tails.pop()
    if len(join().split()) > MAX_WORDS:  # then the certainty lead (the modal still carries certainty)
        parts[0], parts[1] = "", subject[:1].upper() + subject[1:]
    if len(join().split()) > MAX_WORDS:  # then the arousal manner (the punctuation still carries arousal)
        parts[-1] = ""
    text = join()
    return text + (AROUSAL_END[aro] or ".")


class ProceduralGenerator:
    """The ``ChatGenerator`` protocol over ``procedural_headline`` (no model, no network)."""

    name = "procedural"

    def __init__(self, jitter: float = 0.6, n_headlines: int = N_HEADLINES):
        if not 0.0 <= float(jitter) <= 4.0:
            raise ValueError(f"jitter is the SD of the level noise (levels 0..4); give 0..4, got {jitter}.")
        self.jitter, self.n_headlines = float(jitter), int(n_headlines)

    def reply(self, messages: Messages, seed: int) -> str | Failed:
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        try:
            theta, topic = parse_request(users[-1] if users else "")
        except ValueError as err:
            return Failed(f"procedural generator: {err} (few_shot prompts carry θ in words; use mode: block or "
                          "per_headline without few_shot)")
        rng = np.random.default_rng(int(seed) % 2**63)
        if _ONE.search(users[-1]):
            return procedural_headline(theta, topic, rng, self.jitter)
        return "\n".join(f"{i}. {procedural_headline(theta, topic, rng, self.jitter)}"
                         for i in range(1, self.n_headlines + 1))

    def generate(self, conversations: Sequence[Messages], seeds: Sequence[int]) -> list[str | Failed]:
        return [self.reply(list(c), int(s)) for c, s in zip(conversations, seeds)]

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": f"procedural-v{PROCEDURAL_VERSION}", "jitter": self.jitter}

