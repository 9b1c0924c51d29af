"""One self-contained HTML file: inline CSS, figures as base64 PNG, no scripts, fonts or links to fetch,
so it opens offline and can be mailed or archived as is. All user text (prompts, completions, the run
card) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from brainrl.report.data import Comparison
from brainrl.report.figures import Figures
from brainrl.report.stats import Interval, ROIComparison
from brainrl.report.summary import WHOLE_CORTEX, fmt

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:.9em}.verdict{background:#f3f6fb;border-left:4px solid #4c72b0;padding:10px 16px;margin:16px 0}
.verdict li{margin:4px 0}.warn{background:#fff6e5;border-left-color:#e0a030}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}.card{flex:1 1 200px;border:1px solid #ddd;border-radius:6px;padding:10px 12px}
.card .v{font-size:1.3em;font-weight:600}.card .ci{color:#555;font-size:.85em}.pos{color:#b03030}.neg{color:#3050a0}
figure{margin:16px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#555;font-size:.88em;margin-top:4px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:10px}
table{border-collapse:collapse;font-size:.82em;width:100%}th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f0f0f0;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
th{white-space:normal;vertical-align:bottom}td .ci{display:block;color:#666;font-size:.9em}
tr.target td{background:#fde8e8;font-weight:600}tr.whole td{color:#555;font-style:italic}tr.sig td:first-child::after{content:" *"}
.examples{display:grid;grid-template-columns:1fr 1fr;gap:12px}.ex{border:1px solid #ddd;border-radius:6px;padding:8px 10px;font-size:.88em}
.ex h4{margin:0 0 4px;font-size:.95em}.ex p{white-space:pre-wrap;margin:4px 0}.prompt{font-weight:600;margin-top:14px}
.scroll{overflow-x:auto;max-width:100%}pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:.8em;max-height:480px}.err{color:#a00}
"""


def image_data_uri(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}g}"


def _ci(interval: Interval | None, digits: int = 3, signed: bool = False) -> str:
    if interval is None:
        return "–"
    f = (lambda v: fmt(v, digits)) if signed else (lambda v: _num(v, digits))
    return f"{f(interval.estimate)} <span class='ci'>[{f(interval.low)}, {f(interval.high)}]</span>"


def _figure(figures: Figures, name: str) -> str:
    if name in figures.paths:
        caption = figures.captions.get(name, "")
        return (f"<figure id='fig-{escape(name)}'><img alt='{escape(name)}' src='{image_data_uri(figures.paths[name])}'>"
                f"<figcaption>{escape(caption)}</figcaption></figure>")
    if name in figures.errors:
        return f"<p class='err'>Figure {escape(name)} could not be drawn: {escape(figures.errors[name])}</p>"
    return ""


def _card(title: str, interval: Interval | None, note: str = "") -> str:
    if interval is None:
        return ""
    cls = "pos" if interval.low > 0 else ("neg" if interval.high < 0 else "")
    return (f"<div class='card'><div>{escape(title)}</div><div class='v {cls}'>{fmt(interval.estimate)}</div>"
            f"<div class='ci'>CI [{fmt(interval.low)}, {fmt(interval.high)}]</div>"
            f"<div class='ci'>{escape(note)}</div></div>")


def roi_table(rows: list[ROIComparison], target: str | None, alpha: float, level: float) -> str:
    pct = int(round(level * 100))
    head = ("<tr><th>ROI</th><th>base mean [CI]</th><th>tuned mean [CI]</th><th>tuned − base [CI]</th>"
            "<th>Hedges' g [CI]</th><th>p</th><th>q (BH)</th><th>length-adjusted Δ [CI]</th></tr>")
    body = []
    for r in sorted(rows, key=lambda r: (r.name in WHOLE_CORTEX, r.name != target, -r.diff.estimate)):
        classes = []
        if r.name == target:
            classes.append("target")
        if r.name in WHOLE_CORTEX:
            classes.append("whole")
        if r.q_value is not None and r.q_value < alpha:
            classes.append("sig")
        body.append(
            f"<tr class='{' '.join(classes)}'><td>{escape(r.name)}</td><td>{_ci(r.base)}</td><td>{_ci(r.tuned)}</td>"
            f"<td>{_ci(r.diff, signed=True)}</td><td>{_ci(r.hedges_g, 2, signed=True)}</td><td>{_num(r.p_value, 2)}</td>"
            f"<td>{_num(r.q_value, 2)}</td><td>{_ci(r.length_adjusted, signed=True)}</td></tr>")
    note = (f"<p class='meta'>{pct}% CIs (prompt-clustered t for means and differences, bootstrap for g and the "
            "length-adjusted Δ). Target highlighted; whole-cortex rows in italics at the bottom; "
            f"* marks q &lt; {alpha:g}. The length-adjusted Δ is the model coefficient of value ~ model + words + "
            "prompt.</p>")
    return (f"<div class='scroll'><table id='roi-table'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
            f"</div>{note}")


def scores_table(evaluation: dict[str, Any] | None) -> str:
    """The evaluation's rows (rewards as trained, their ROIs, judges, length), as ``brainrl evaluate`` prints them."""
    if not evaluation:
        return ""
    pct = int(round(evaluation["interval"]["level"] * 100))

    def cell(entry: dict[str, Any]) -> str:
        nan = float("nan")
        low, high = entry["ci"]
        return _ci(Interval(*(nan if v is None else v for v in (entry["estimate"], low, high))), signed=True)

    body = "".join(
        f"<tr><td>{escape(r['kind'])}</td><td>{escape(r['name'])}</td><td>{cell(r['base'])}</td><td>{cell(r['tuned'])}</td>"
        f"<td>{cell(r['diff'])}</td><td>{r['n']['base']}/{r['n']['tuned']}</td></tr>" for r in evaluation["scores"])
    head = ("<tr><th>kind</th><th>score</th><th>base [CI]</th><th>tuned [CI]</th><th>tuned − base [CI]</th>"
            "<th>n base/tuned</th></tr>")
    return (f"<div class='scroll'><table id='scores-table'><thead>{head}</thead><tbody>{body}</tbody></table></div>"
            f"<p class='meta'>{pct}% CIs: {escape(evaluation['interval']['method'])}.</p>")


def examples_html(comparison: Comparison, count: int) -> str:
    target_col = comparison.roi_names.index(comparison.stats.target) if comparison.stats.target else None
    parts = []
    for p_index, prompt in enumerate(comparison.prompts[:count]):
        cells = []
        for model in (comparison.base, comparison.tuned):
            hits = [i for i, s in enumerate(model.strata) if s == p_index]
            if not hits:
                cells.append(f"<div class='ex'><h4>{escape(model.label)}</h4><p><em>no usable completion</em></p></div>")
                continue
            i = hits[0]
            value = "" if target_col is None else (
                f" · {escape(comparison.stats.target)} = {model.roi_values[i, target_col]:.4g}")
            cells.append(f"<div class='ex'><h4>{escape(model.label)} <span class='meta'>({int(model.n_words[i])} words"
                         f"{value})</span></h4><p>{escape(model.texts[i])}</p></div>")
        parts.append(f"<div class='prompt'>Prompt: {escape(prompt)}</div><div class='examples'>{''.join(cells)}</div>")
    return "".join(parts)


def _settings_table(settings: dict[str, Any]) -> str:
    if not settings:
        return "<p class='meta'>No generation settings were recorded.</p>"
    rows = "".join(f"<tr><td>{escape(str(k))}</td><td style='text-align:left;white-space:normal'>"
                   f"{escape(json.dumps(v, default=str) if not isinstance(v, str) else v)}</td></tr>"
                   for k, v in settings.items())
    return f"<table id='settings'>{rows}</table>"


def render_report(comparison: Comparison, record: dict[str, Any], figures: Figures, *,
                  run_card: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string."""
    stats = comparison.stats
    target = stats.row(stats.target) if stats.target else None
    glob = stats.row("global") if "global" in comparison.roi_names else None
    level = stats.config.level
    warn = " warn" if min(stats.n_base, stats.n_tuned) < 32 else ""
    verdict = "".join(f"<li>{escape(s)}</li>" for s in record["verdict"])
    cards = "".join([
        _card(f"{stats.target}: tuned − base", target.diff if target else None, "target ROI"),
        _card("global: tuned − base", glob.diff if glob else None, "whole cortex, medial wall excluded"),
        _card(f"selectivity change ({stats.selectivity.name})" if stats.selectivity else "", stats.selectivity.diff
              if stats.selectivity else None, "target minus global, per completion"),
        _card(f"{stats.target}: length-adjusted", target.length_adjusted if target else None, "model coefficient"),
    ])
    failures = ""
    n_failed = len(comparison.base.failures) + len(comparison.tuned.failures)
    if n_failed:
        items = "".join(f"<li>{escape(m.label)} #{f['index']}: {escape(f['reason'])}</li>"
                        for m in (comparison.base, comparison.tuned) for f in m.failures[:10])
        failures = f"<h3>Completions without a brain map ({n_failed})</h3><ul>{items}</ul>"
    training = _figure(figures, "training") or "<p class='meta'>No training metrics were given.</p>"
    method = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in stats.method.items())
    card_json = escape(json.dumps(run_card, indent=2, ensure_ascii=False, default=str)) if run_card else ""
    run_card_html = (f"<details open><summary>run_card.json</summary><pre id='run-card'>{card_json}</pre></details>"
                     if run_card else "<p class='meta'>No run card (explicit --base/--adapter comparison).</p>")
    surfaces = "".join(_figure(figures, n) for n in ("surface_base", "surface_tuned"))
    provenance = escape(json.dumps(record.get("provenance", {}), indent=2, default=str))
    prompts = "".join(f"<li>{escape(p)}</li>" for p in comparison.prompts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(record['title'])}</title><style>{STYLE}</style></head>
<body><main>
<h1>{escape(record['title'])}</h1>
<div class="meta">{stats.n_base} base and {stats.n_tuned} tuned completions on {stats.n_strata} prompt(s) ·
target ROI <b>{escape(str(stats.target))}</b> · {int(round(level * 100))}% CIs · seed {stats.config.seed}</div>
<section id="verdict"><div class="verdict{warn}"><ul>{verdict}</ul></div><div class="cards">{cards}</div></section>
<section id="surfaces"><h2>Cortical maps</h2>{_figure(figures, 'surface_diff')}
<div class="grid2">{surfaces}</div>{_figure(figures, 'surface_effect')}</section>
<section id="scores"><h2>Rewards as trained</h2>{scores_table(record.get('evaluation'))}</section>
<section id="rois"><h2>ROI differences</h2>{_figure(figures, 'roi_differences')}
{roi_table(stats.rows, stats.target, stats.config.fdr_alpha, level)}</section>
<section id="timecourses"><h2>Time courses</h2>{_figure(figures, 'timecourses')}</section>
<section id="length"><h2>Is it completion length?</h2>{_figure(figures, 'length')}</section>
<section id="training"><h2>Training</h2>{training}</section>
<section id="examples"><h2>Example completions</h2><p class="meta">The first usable completion of each model for
the first {min(comparison.config.n_examples, len(comparison.prompts))} prompts (same prompt, same sampling seed).</p>
{examples_html(comparison, comparison.config.n_examples)}{failures}</section>
<section id="method"><h2>Method and settings</h2><ul>{method}</ul>
<h3>Prompts</h3><ol>{prompts}</ol><h3>Generation and brain pipeline</h3>{_settings_table(record.get('settings', {}))}
<h3>Run card</h3>{run_card_html}<h3>Provenance</h3><pre>{provenance}</pre></section>
</main></body></html>
"""
