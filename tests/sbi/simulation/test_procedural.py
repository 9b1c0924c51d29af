"""The θ-faithful procedural generator: request parsing, the chat protocol, determinism, graded expression."""

import numpy as np
import pytest

from brainrl.brain.base import Failed
from brainrl.sbi.simulation.generators import GENERATORS, GeneratorConfig
from brainrl.sbi.judges.text import marker_features, MARKER_NAMES
from brainrl.sbi.simulation.parse import parse_headlines, parse_single_headline
from brainrl.sbi.simulation.procedural import ProceduralGenerator, parse_request
from brainrl.sbi.simulation.prompts import few_shot_headline_messages, generator_messages, headline_messages
from brainrl.sbi.theta.prompts import theta_prompt


def test_parse_request_multiline_and_one_line_forms():
    theta = np.array([0.64, 0.05, 0.99, 0.5, 0.31, 0.0])
    for text in (generator_messages(theta, "civic life")[1]["content"], theta_prompt(theta, "civic life")):
        parsed, topic = parse_request(text)
        assert topic == "civic life" and np.allclose(parsed, theta, atol=1e-9)
    with pytest.raises(ValueError, match="certainty"):
        parse_request("Topic: weather - valence: 0.5 (moderate)")


def test_registered_and_replies_in_the_writer_formats():
    assert "procedural" in GENERATORS.names()
    gen = GeneratorConfig("procedural", {"jitter": 0.5}).build()
    theta = np.full(6, 0.5)
    block = gen.generate([generator_messages(theta, "sports")], [11])[0]
    assert len(parse_headlines(block)) == 5
    one = gen.generate([headline_messages(theta, "sports", 2)], [11])[0]
    assert parse_single_headline(one)
    refused = gen.generate([few_shot_headline_messages(theta, "sports")], [11])[0]
    assert isinstance(refused, Failed) and "few_shot" in refused.reason


def test_reply_is_a_pure_function_of_request_and_seed():
    gen = ProceduralGenerator()
    msgs = [generator_messages(np.full(6, v), "health") for v in (0.1, 0.9)]
    assert gen.generate(msgs, [1, 2]) == gen.generate(msgs[:1], [1]) + gen.generate(msgs[1:], [2])
    assert gen.generate(msgs[:1], [1]) != gen.generate(msgs[:1], [3])


@pytest.mark.parametrize("dim, marker_high, marker_low", [("certainty", "boosters", "hedges"),
                                                         ("formality", "latinate", "casual"),
                                                         ("arousal", "exclamations", "calm"),
                                                         ("dominance", "control", "powerless"),
                                                         ("subjectivity", "opinion", "attribution")])
def test_markers_follow_theta_monotonically(dim, marker_high, marker_low):
    """Averaged over blocks, a dimension's high markers rise and its low markers fall with θ_dim."""
    from brainrl.sbi.simulation.prior import PARAM_NAMES

    gen = ProceduralGenerator()
    j = PARAM_NAMES.index(dim)
    hi, lo = MARKER_NAMES.index(marker_high), MARKER_NAMES.index(marker_low)
    means = []
    for value in (0.05, 0.5, 0.95):
        rng = np.random.default_rng(0)
        feats = []
        for i in range(40):
            theta = rng.uniform(size=6)
            theta[j] = value
            feats.append(marker_features(gen.reply(generator_messages(theta, "science"), i)))
        means.append(np.mean(feats, axis=0))
    assert means[0][hi] < means[1][hi] < means[2][hi]
    assert means[0][lo] > means[1][lo] > means[2][lo]
