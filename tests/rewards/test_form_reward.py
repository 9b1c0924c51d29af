"""The structural headline-form reward (brainrl.rewards.form, rewards/headline_form.py)."""

import pickle

import pytest

from brainrl.rewards import HeadlineForm, load_reward_file


def test_one_line_of_a_few_words_passes_and_run_ons_lists_and_blanks_fail():
    form = HeadlineForm(min_words=3, max_words=20)
    texts = ["Storm hits the coast as towns brace for floods",            # a headline: 9 words, one line
             "  Markets rally after the vote  \n",                           # surrounding whitespace is not a line
             "Top stories\nStorm hits the coast\nMarkets rally",             # a multi-line list of titles
             " ".join(["word"] * 21),                                         # a run-on line past the limit
             "Rain",                                                          # too short
             "   "]                                                           # nothing
    assert form(None, texts) == [0.0, 0.0, -1.0, -1.0, -1.0, -1.0]
    assert form(None, [" ".join(["word"] * 20)]) == [0.0]                   # the limit itself is allowed
    assert form.last_failures == {}                                          # every text has a form: never None


def test_reads_chat_completions_and_ignores_token_ids_and_columns():
    form = HeadlineForm()
    chat = [[{"role": "assistant", "content": "Storm hits the coast"}],
            [{"role": "assistant", "content": "Line one\nLine two of it"}]]
    assert form(prompts=["p", "p"], completions=chat, completion_ids=[[1], [2]], theta_target=[[0.5] * 6] * 2) \
        == [0.0, -1.0]


def test_is_picklable_named_described_and_refuses_bad_limits():
    form = pickle.loads(pickle.dumps(HeadlineForm(2, 12)))
    assert form.__name__ == "headline_form" and form(None, ["a b", "a"]) == [0.0, -1.0]
    assert form.describe() == {"name": "headline_form", "type": "HeadlineForm", "min_words": 2, "max_words": 12}
    with pytest.raises(ValueError, match="min_words <= max_words"):
        HeadlineForm(min_words=10, max_words=5)
    with pytest.raises(ValueError, match="min_words"):
        HeadlineForm(min_words=0)


def test_reward_file_builds_it_from_recipe_kwargs():
    (made,) = load_reward_file("rewards/headline_form.py", min_words=4, max_words=8)
    assert isinstance(made, HeadlineForm) and (made.min_words, made.max_words) == (4, 8)
    (default,) = load_reward_file("rewards/headline_form.py")
    assert (default.min_words, default.max_words) == (3, 20)
