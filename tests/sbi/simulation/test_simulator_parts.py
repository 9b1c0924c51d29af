import logging

import numpy as np
import pytest

from brainrl.brain.base import Failed
from brainrl.configs import ConfigError, build
from brainrl.sbi.simulation.parse import FormatViolation, block_text, parse_headlines, parse_scores, parse_single_headline
from brainrl.sbi.simulation.prior import PARAM_NAMES, ThetaPrior, theta_for_index
from brainrl.sbi.simulation.prompts import evaluator_messages, generator_messages, headline_messages, verbal_bin
from brainrl.sbi.simulation.simulator import HeadlineRequest, HeadlineWriter
from brainrl.sbi.simulation.topics import TOPICS, topic_for_index

from sbi_fakes import ScriptedGenerator, seeded_headline


def test_prior_order_range_and_seeding():
    assert PARAM_NAMES == ("valence", "arousal", "dominance", "subjectivity", "certainty", "formality")
    draws = ThetaPrior().sample(4000, rng=np.random.default_rng(1))
    assert draws.shape == (4000, 6) and draws.min() >= 0 and draws.max() < 1
    assert np.allclose(draws.mean(0), 0.5, atol=0.03) and np.allclose(draws.var(0), 1 / 12, atol=0.01)
    assert np.array_equal(ThetaPrior().sample(3, 7), ThetaPrior().sample(3, 7))
    # per-item draws depend on (seed, index) only
    assert np.array_equal(theta_for_index(3, 10), theta_for_index(3, 10))
    assert not np.array_equal(theta_for_index(3, 10), theta_for_index(3, 11))
    assert not np.array_equal(theta_for_index(3, 10), theta_for_index(4, 10))


def test_topics_balanced():
    assert len(TOPICS) == 10 and "civic life" in TOPICS
    counts = {t: 0 for t in TOPICS}
    for i in range(50):
        counts[topic_for_index(i)] += 1
    assert set(counts.values()) == {5}


def test_prompts_carry_scores_bins_topic_and_format():
    theta = [0.05, 0.3, 0.5, 0.7, 0.9, 1.0]
    system, user = generator_messages(theta, "weather")
    assert system["role"] == "system" and "exactly 5 lines" in system["content"]
    for name in PARAM_NAMES:
        assert name in system["content"] and name in user["content"]
    assert "weather" in user["content"] and "0.05 (very low)" in user["content"] and "0.90 (very high)" in user["content"]
    assert [verbal_bin(v) for v in (0.1, 0.3, 0.5, 0.7, 0.95)] == ["very low", "low", "moderate", "high", "very high"]
    with pytest.raises(ValueError, match="6 values"):
        generator_messages([0.5] * 5, "weather")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        verbal_bin(1.2)
    assert "number 3" in headline_messages(theta, "sports", 3)[1]["content"]
    assert "1. a b" in evaluator_messages(["a b", "c d"])[1]["content"]


GOOD = "\n".join(f"{k}. " + " ".join(["word"] * 11) + f" number{k}" for k in range(1, 6))


def test_parse_headlines_good_and_bad():
    heads = parse_headlines(GOOD)
    assert len(heads) == 5 and heads[0].endswith("number1")
    assert parse_headlines('1) "' + GOOD[3:].replace("\n", '"\n', 1))[0] == heads[0]  # 1) and quotes accepted
    bad = {
        "Here are your headlines:\n" + GOOD: "expected 5 numbered lines",
        "\n".join(GOOD.splitlines()[:4]): "expected 5 numbered lines",
        GOOD.replace("2. ", "7. "): "numbered 7",
        GOOD.replace("3. ", "- "): "not numbered",
        GOOD.replace("number4", "number1"): "repeats a headline",
        GOOD.replace("4. " + " ".join(["word"] * 11), "4. short"): "has 2 words",
    }
    for text, reason in bad.items():
        with pytest.raises(FormatViolation, match=reason):
            parse_headlines(text)


def test_parse_single_and_scores():
    assert parse_single_headline('"Council approves new bridge after a long and heated public debate"\n').startswith("Council")
    for text, reason in {"one\ntwo words here": "got 2 lines", "1. Council approves a new bridge after debate today": "numbered",
                         "Too short": "2 words"}.items():
        with pytest.raises(FormatViolation, match=reason):
            parse_single_headline(text)
    good = "\n".join(f"{n}: 0.{i}5" for i, n in enumerate(PARAM_NAMES))
    assert parse_scores(good) == [0.05, 0.15, 0.25, 0.35, 0.45, 0.55]
    for text, reason in {good.replace("0.05", "1.5"): "outside", good.replace("valence", "mood"): "expected 'valence'",
                         "valence: 0.1": "expected 6", good.replace("0.25", "high"): "not 'name: number'",
                         good.replace("0.05", "nan"): "not 'name: number'"}.items():
        with pytest.raises(FormatViolation, match=reason):
            parse_scores(text)
    assert block_text(["A rose", "B fell!"]) == "A rose. B fell!"


def _requests(n):
    return [HeadlineRequest(i, theta_for_index(0, i), topic_for_index(i)) for i in range(n)]


def test_writer_retries_bad_output_with_feedback_then_accepts():
    def reply(messages, seed):
        # first attempt at each item: chatty preamble; the retry (it sees the reason) is well formed
        if len(messages) == 2:
            return "Sure! Here are five headlines:\n" + ScriptedGenerator.good_block(messages, seed)
        assert "broke the required format: expected 5 numbered lines, got 6" in messages[-1]["content"]
        return ScriptedGenerator.good_block(messages, seed)

    gen = ScriptedGenerator(reply)
    seen: set[str] = set()
    blocks = HeadlineWriter(gen, max_attempts=3).write(_requests(3), seed=0, seen=seen)
    assert all(isinstance(b, list) and len(b) == 5 for b in blocks)
    assert gen.calls == 2 and len(seen) == 15


def test_writer_bounded_retries_give_failed_with_reason(caplog):
    gen = ScriptedGenerator(lambda m, s: "no headlines today")
    with caplog.at_level(logging.INFO):
        blocks = HeadlineWriter(gen, max_attempts=2).write(_requests(2), seed=0, seen=set())
    # a rejected reply is not worth a log line at INFO (a campaign rejects hundreds); --verbose shows them
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "rejected" in r.getMessage()]
    assert gen.calls == 2
    assert all(isinstance(b, Failed) and "after 2 attempts" in b.reason and "expected 5" in b.reason for b in blocks)


def test_uniqueness_across_split_is_enforced():
    fixed = ScriptedGenerator.good_block(None, 1)
    calls = []

    def reply(messages, seed):
        calls.append(seed)
        return fixed if len(calls) <= 2 else ScriptedGenerator.good_block(messages, seed)

    seen: set[str] = set()
    blocks = HeadlineWriter(ScriptedGenerator(reply), max_attempts=3).write(_requests(2), 0, seen)
    assert all(isinstance(b, list) for b in blocks)
    assert len({h for b in blocks for h in b}) == 10  # the second item had to retry: its first block was taken
    again = HeadlineWriter(ScriptedGenerator(lambda m, s: fixed), max_attempts=2).write(_requests(1), 0, seen)
    assert isinstance(again[0], Failed) and "already used" in again[0].reason


def test_per_headline_mode_builds_unique_blocks():
    def reply(messages, seed):
        return seeded_headline(seed) if seed % 3 else "bad"  # about a third of the answers are too short

    gen = ScriptedGenerator(reply)
    blocks = HeadlineWriter(gen, max_attempts=6, mode="per_headline").write(_requests(4), 0, set())
    assert all(isinstance(b, list) and len(set(b)) == 5 for b in blocks)
    assert len(gen.conversations) > 20  # retries happened headline by headline


def test_config_rejects_unknown_fields_naming_them():
    from brainrl.sbi.simulation.campaign import CampaignConfig

    cfg = build(CampaignConfig, {"n_items": 5, "generator": {"name": "openai", "kwargs": {"model": "m"}},
                                     "projection": {"k": 8}})
    assert cfg.projection.k == 8 and cfg.generator.name == "openai"
    with pytest.raises(ConfigError, match=r"Unknown field CampaignConfig.projection.kk.*Did you mean 'k'"):
        build(CampaignConfig, {"projection": {"kk": 3}}, "CampaignConfig")
    with pytest.raises(ConfigError, match="n_items: expected an integer"):
        build(CampaignConfig, {"n_items": "many"}, "CampaignConfig")


# -- the small-model path: few-shot prompts, lenient cleaning, resampling ---------------------------
from brainrl.sbi.simulation.parse import clean_headline  # noqa: E402
from brainrl.sbi.simulation.prompts import FEW_SHOT_EXAMPLES, THETA_WORDS, describe_theta, few_shot_headline_messages  # noqa: E402

EXAMPLES = [e.headline for e in FEW_SHOT_EXAMPLES]


def test_describe_theta_uses_the_verbal_bins_in_prior_order():
    assert describe_theta([0.05, 0.95, 0.5, 0.3, 0.7, 0.1]) == (
        "very bad news; urgent and dramatic; people cope; mostly factual; sure; very casual, slangy")
    assert all(len(levels) == 5 for levels in THETA_WORDS.values()) and tuple(THETA_WORDS) == PARAM_NAMES
    with pytest.raises(ValueError, match="6 values"):
        describe_theta([0.5] * 3)


def test_few_shot_messages_share_a_prefix_and_end_with_the_request():
    a = few_shot_headline_messages(theta_for_index(0, 1), "sports")
    b = few_shot_headline_messages(theta_for_index(0, 2), "weather")
    assert a[:-1] == b[:-1] and a[0]["role"] == "system"  # what prefix_cache reuses
    assert [m["role"] for m in a[1:]] == ["user", "assistant"] * len(FEW_SHOT_EXAMPLES) + ["user"]
    assert a[-1]["content"].startswith("Topic: sports. Style: ") and describe_theta(theta_for_index(0, 1)) in a[-1]["content"]
    assert not {e.topic for e in FEW_SHOT_EXAMPLES} & set(TOPICS)  # examples cannot be copied as an on-topic answer
    for example in FEW_SHOT_EXAMPLES:
        assert 10 <= len(example.headline.split()) <= 20


@pytest.mark.parametrize("reply, expected", [
    ('1. **"Storm closes three coastal bridges as crews work through the night"**\n', "Storm closes three coastal bridges as crews work through the night"),
    ("- Headline: Council approves the new bridge after a long public debate\nextra line", "Council approves the new bridge after a long public debate"),
    ("Flood waters recede in the valley. Residents return to clear their homes.", "Flood waters recede in the valley."),
    ("The U.S. Senate passes the new transit budget by a wide margin. Next", "The U.S. Senate passes the new transit budget by a wide margin."),
    ("\n\n# Local museum reopens its doors with a free weekend for families", "Local museum reopens its doors with a free weekend for families"),
])
def test_clean_headline_strips_packaging(reply, expected):
    assert clean_headline(reply, 5, 30, EXAMPLES) == expected


@pytest.mark.parametrize("reply, reason", [
    ("", "empty reply"),
    ("Here is the headline:\n", "meta-text"),
    ("Sure! Storm closes three coastal bridges overnight", "meta-text"),
    ("That answer broke the requested format: one line", "meta-text"),
    ("This news headline is about a new tech gadget for schools", "meta-text"),
    ("Premise: researchers find a new enzyme for plastic waste", "meta-text"),
    ("I think the storm will close three bridges tonight", "first-person"),
    ("Sounds good. You have written a fine piece today", "has 2 words"),
    ("Council approves bridge", "has 3 words"),
    (" ".join(["word"] * 10 + [f"w{i}" for i in range(25)]), "has 35 words"),
    ("The city council is planning to spend millions on the", "mid-sentence at 'the'"),
    ("Science science science and more science science today", "repeats its own words"),
    (FEW_SHOT_EXAMPLES[2].headline.replace("Officials", "Experts"), "copies a few-shot example"),
])
def test_clean_headline_rejects_with_reason(reply, reason):
    with pytest.raises(FormatViolation, match=reason):
        clean_headline(reply, 5, 30, EXAMPLES)


def test_lenient_few_shot_writer_resamples_without_feedback():
    def reply(messages, seed):
        assert len(messages) == 2 + 2 * len(FEW_SHOT_EXAMPLES)  # never a correction turn
        return ("Sure, here is your headline:" if seed % 2 else f'1. "{seeded_headline(seed)}"') + "\n"

    gen = ScriptedGenerator(reply)
    writer = HeadlineWriter(gen, max_attempts=8, min_words=5, max_words=30, feedback=False, mode="per_headline",
                            few_shot=True, cleaning="lenient")
    seen: set[str] = set()
    blocks = writer.write(_requests(3), 0, seen)
    assert all(isinstance(b, list) and len(set(b)) == 5 for b in blocks) and len(seen) == 15
    assert all(not h.startswith(("1.", '"')) for b in blocks for h in b)  # packaging stripped
    assert gen.calls > 1  # the meta-text replies were resampled with new seeds
    stuck = HeadlineWriter(ScriptedGenerator(lambda m, s: "Here is the headline"), max_attempts=2, feedback=False,
                           mode="per_headline", few_shot=True, cleaning="lenient").write(_requests(1), 0, set())
    assert isinstance(stuck[0], Failed) and "after 2 attempts" in stuck[0].reason and "meta-text" in stuck[0].reason


def test_writer_refuses_lenient_options_in_block_mode():
    with pytest.raises(ValueError, match="per_headline options"):
        HeadlineWriter(ScriptedGenerator(), mode="block", cleaning="lenient")
    with pytest.raises(ValueError, match="cleaning must be"):
        HeadlineWriter(ScriptedGenerator(), mode="per_headline", cleaning="loose")


def test_few_shot_cycle_evaluator_resamples_and_parses_strictly(monkeypatch):
    from brainrl.sbi.judges.cycle import CycleConfig, CycleEvaluator
    from brainrl.sbi.simulation.generators import GeneratorConfig
    from brainrl.sbi.simulation.prompts import FEW_SHOT_EVALUATOR_EXAMPLES

    from sbi_fakes import scores_reply

    def reply(messages, seed):
        assert len(messages) == 2 + 2 * len(FEW_SHOT_EVALUATOR_EXAMPLES)  # worked ratings, no correction turn
        assert messages[-1]["content"].startswith("Headlines:\n- ")
        return "Sure! The scores are high." if seed % 2 else scores_reply([0.2, 0.4, 0.6, 0.8, 0.5, 0.1])

    gen = ScriptedGenerator(reply)
    result = CycleEvaluator(gen, max_attempts=6, few_shot=True, feedback=False).evaluate(
        [["a b c", "d e f"], ["g h i"]], ids=[3, 4])
    assert result.valid.all() and np.allclose(result.scores[0], [0.2, 0.4, 0.6, 0.8, 0.5, 0.1])
    failed = CycleEvaluator(ScriptedGenerator(lambda m, s: "valence: 0.5"), max_attempts=2, few_shot=True,
                            feedback=False).evaluate([["a b c"]])
    assert not failed.valid.any() and "after 2 attempts" in failed.reasons[0] and "expected 6" in failed.reasons[0]
    # backend-dependent defaults: few-shot + resampling for the small local model, zero-shot + feedback for APIs
    local = CycleEvaluator.from_config(CycleConfig())
    assert (local.few_shot, local.feedback) == (True, False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    api = CycleEvaluator.from_config(CycleConfig(evaluator=GeneratorConfig("openai", {"model": "m"})))
    assert (api.few_shot, api.feedback) == (False, True)
    forced = CycleEvaluator.from_config(CycleConfig(few_shot=False, feedback=True))
    assert (forced.few_shot, forced.feedback) == (False, True)
