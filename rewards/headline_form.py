"""Headline form: 0 for one line of 3-20 words, -1 otherwise (``brainrl.rewards.form.HeadlineForm``).

Structural only (lines and word count), so it reads nothing the text judge reads. A recipe weights it beside
the θ-target reward, e.g.::

    rewards:
      - path: rewards/headline_form.py
        weight: 0.5
        kwargs: {min_words: 3, max_words: 20}
"""

from brainrl.rewards.form import HeadlineForm


def make_reward(min_words: int = 3, max_words: int = 20):
    return HeadlineForm(min_words=min_words, max_words=max_words)
