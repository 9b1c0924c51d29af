"""The ten fairly neutral news topics of the paper; campaigns cycle through them for balance."""

from __future__ import annotations

TOPICS: tuple[str, ...] = (
    "weather",
    "sports",
    "infrastructure",
    "science",
    "culture",
    "civic life",
    "business",
    "hazards",
    "technology",
    "health",
)


def topic_for_index(index: int, topics: tuple[str, ...] = TOPICS) -> str:
    """Round-robin assignment: any run of len(topics) consecutive items covers each topic once."""
    if not topics:
        raise ValueError("topic list is empty; give at least one topic.")
    return topics[int(index) % len(topics)]
