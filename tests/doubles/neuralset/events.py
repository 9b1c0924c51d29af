"""Double of neuralset's Word events: the fields TRIBE's text extractor reads, built from DataFrame rows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Word:
    start: float
    duration: float
    timeline: str
    text: str
    context: str = ""
    language: str = ""


def extract_words(obj) -> list[Word]:
    """Word events of a DataFrame (in row order) or a list of events (stands in for EventTypesHelper.extract)."""
    if isinstance(obj, pd.DataFrame):
        rows = obj[obj["type"] == "Word"]
        context = rows["context"] if "context" in rows.columns else pd.Series("", index=rows.index)
        return [
            Word(float(r.start), float(r.duration), str(r.timeline), str(r.text), c if isinstance(c, str) else "")
            for r, c in zip(rows.itertuples(), context)
        ]
    return [e for e in obj if isinstance(e, Word)]
