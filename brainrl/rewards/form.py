"""A structural headline-form check: one line of a few words, nothing about what the words are.

``HeadlineForm`` scores 0.0 for a completion that is one non-empty line of ``min_words``–``max_words``
whitespace-separated words and ``-1.0`` otherwise. Weighted beside a θ-target reward it keeps a policy in
the headline form its prompt asks for (the fourth θ attempt drifted into run-on first-person commentary
and multi-line title lists, docs/theta.md) without reading any word's meaning: it counts lines and words
only, so it shares no feature with the text judge (lexicons, marker word lists, word length, punctuation,
sentence embeddings) and the judge stays independent of the reward.
"""

from __future__ import annotations

from typing import Any, Sequence

from brainrl.rewards.base import Reward, completion_text


class HeadlineForm(Reward):
    """0.0 for one line of ``min_words``..``max_words`` words, -1.0 otherwise (never ``None``: every text
    has a form)."""

    def __init__(self, min_words: int = 3, max_words: int = 20, name: str = "headline_form"):
        if not 1 <= int(min_words) <= int(max_words):
            raise ValueError(f"headline form: need 1 <= min_words <= max_words, got {min_words}, {max_words}; "
                             "e.g. min_words: 3, max_words: 20.")
        super().__init__(name)
        self.min_words, self.max_words = int(min_words), int(max_words)

    def ok(self, text: str) -> bool:
        """Whether ``text`` is one non-empty line of an allowed number of words."""
        text = text.strip()
        return bool(text) and "\n" not in text and self.min_words <= len(text.split()) <= self.max_words

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any
                 ) -> list[float | None]:
        self.last_failures = {}
        return [0.0 if self.ok(completion_text(c)) else -1.0 for c in completions]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "min_words": self.min_words, "max_words": self.max_words}
