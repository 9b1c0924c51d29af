"""How an evaluation is shown: one rich table (the same for ``brainrl evaluate`` and ``brainrl compare``)."""

from __future__ import annotations

from typing import Any

from brainrl.report.stats import Interval
from brainrl.report.summary import fmt_ci

KIND_ORDER = ("reward", "roi", "judge", "length")


def _interval(entry: dict[str, Any]) -> Interval:
    low, high = entry["ci"]
    nan = float("nan")
    return Interval(nan if entry["estimate"] is None else entry["estimate"], nan if low is None else low,
                    nan if high is None else high)


def print_table(record: dict[str, Any], title: str | None = None, console=None) -> None:
    """Base, tuned and tuned − base with CIs for every scored column (``record``: ``Evaluation.to_dict()``)."""
    from rich.console import Console
    from rich.table import Table

    level = f"{round(record['interval']['level'] * 100)}% CI"
    table = Table(title=title or (f"Base vs tuned: {record['completions_per_model']} completions per model, "
                                  f"{record['prompts']} prompts"),
                  caption=f"CIs: {record['interval']['method']}")
    for column in ("kind", "metric", f"base ({level})", f"tuned ({level})", f"tuned − base ({level})", "n", "failed"):
        table.add_column(column)
    rows = sorted(record["scores"], key=lambda r: KIND_ORDER.index(r["kind"]) if r["kind"] in KIND_ORDER else 99)
    for row in rows:
        failed = row["failed"]["base"] + row["failed"]["tuned"]
        table.add_row(row["kind"], row["name"], fmt_ci(_interval(row["base"])), fmt_ci(_interval(row["tuned"])),
                      fmt_ci(_interval(row["diff"])), f"{row['n']['base']}/{row['n']['tuned']}", str(failed or ""))
    if record.get("kl_to_base_per_token") is not None:
        table.add_row("policy", "KL(tuned‖base) per token", "", f"{record['kl_to_base_per_token']:.4f}", "", "", "")
    (console or Console(width=150)).print(table)
