"""Word-timing rules shared by the engines: every token timed, in order, inside the audio."""

import pytest

from brainrl.stimulus.timing import MIN_STEP, build_words, check_words, token_of_char, token_spans


def test_token_spans_keep_punctuation_attached():
    text = '"Hello," she said — 3.5% of $1,200.'
    spans = token_spans(text)
    assert [text[a:b] for a, b in spans] == text.split()
    assert spans[0] == (0, 8)


def test_token_of_char_maps_inside_and_after_tokens():
    starts = [s for s, _ in token_spans("ab cd ef")]
    assert [token_of_char(starts, i) for i in (0, 1, 2, 3, 7, 50)] == [0, 0, 0, 1, 2, 2]


def test_untimed_tokens_fill_the_silence_between_neighbours():
    text = "one — two"
    words = build_words(text, [0.0, None, 1.0], [0.4, None, 1.5], duration=2.0)
    check_words(words, 2.0)
    assert [w.text for w in words] == ["one", "—", "two"]
    assert words[0].stop == pytest.approx(0.4)  # the known end is kept
    assert words[1].start == pytest.approx(0.4) and words[1].stop == pytest.approx(1.0)
    assert words[2].stop == pytest.approx(1.5)


def test_untimed_tokens_without_silence_share_the_previous_span():
    words = build_words("a 2025 b", [0.0, None, 1.0], [None, None, None], duration=1.5)
    check_words(words, 1.5)
    assert words[1].start == pytest.approx(0.5)
    assert words[0].stop == pytest.approx(0.5)


def test_backwards_start_is_reinterpolated_and_edges_are_valid():
    words = build_words("x y z w", [None, 0.8, 0.2, None], [None, 0.9, 0.3, None], duration=1.0)
    check_words(words, 1.0)
    assert words[0].start == 0.0 and words[1].start == pytest.approx(0.8)
    assert words[-1].stop == pytest.approx(1.0)


def test_equal_starts_are_separated_and_nothing_known_spreads_evenly():
    words = build_words("a b c", [0.0, 0.0, 0.0], [None] * 3, duration=1.0)
    check_words(words, 1.0)
    assert words[1].start - words[0].start >= MIN_STEP - 1e-12
    even = build_words("a b", [None, None], [None, None], duration=2.0)
    assert [(w.start, w.duration) for w in even] == [(0.0, 1.0), (1.0, 1.0)]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="one start and one end per token"):
        build_words("a b", [0.0], [None], duration=1.0)
    with pytest.raises(ValueError, match="too short"):
        build_words("a b c", [None] * 3, [None] * 3, duration=0.002)
