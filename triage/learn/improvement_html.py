"""The improvement report as one self-contained HTML page (no external resources).

Per field: the headline figures at the current threshold with a verdict against the target, a
plot of precision and coverage against the threshold (inline SVG) with the current threshold
marked, the sweep as a table, and the classes named as the mapping names them (human label,
canonical label, raw value), those below the target flagged.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from triage.learn.report import _STYLE

__all__ = ["render_improvement_html", "write_improvement_html"]


def write_improvement_html(report: Mapping[str, Any], path: Path, *, title: str) -> None:
    """Write ``render_improvement_html(report)`` to ``path`` (UTF-8)."""
    path.write_text(render_improvement_html(report, title=title), encoding="utf-8")


def render_improvement_html(report: Mapping[str, Any], *, title: str) -> str:
    """The page for a ``build_report`` object (plus the CLI's ``window``, when present)."""
    tickets = report["tickets"]
    window = report.get("window") or {}
    span = f" from {window.get('since')} to {window.get('until') or 'now'}" if window else ""
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Suggestions recorded{_e(span)} on {_e(report['platform'])} "
        f"{_e(report['table'])}, compared with the values people left on the tickets once "
        f"closed. {tickets['with_suggestions']} tickets had suggestions; "
        f"{tickets['closed']} are closed and scored; {tickets['not_closed']} are not closed "
        "yet (or gone) and are left out. <b>Agreement</b>: suggestion equals the final value; "
        "<b>coverage</b>: share of the closed tickets whose suggestion cleared the threshold; "
        "<b>precision</b>: share of those that agreed. A default left in place (such as "
        "impact 3) is not a person's choice and is not scored.</p>",
        _summary(report["fields"]),
    ]
    for name, figures in report["fields"].items():
        parts.append(_section(name, figures))
    parts.append("</body></html>")
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _summary(fields: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        "<tr><th class='l'>field</th><th class='l'>mode</th><th>threshold</th><th>target</th>"
        "<th>suggestions</th><th>final known</th><th>agreement</th><th>coverage</th>"
        "<th>precision</th></tr>"
    )
    rows = []
    for name, f in fields.items():
        mark = ' class="bad"' if f["below_target"] else ""
        rows.append(
            f"<tr><th class='l'>{_e(name)}</th><td class='l'>{_e(f['mode'])}</td>"
            f"<td>{f['threshold']:.2f}</td><td>{f['target']:.2f}</td><td>{f['suggestions']}</td>"
            f"<td>{f['final_known']}</td><td>{_pct(f['agreement'])}</td>"
            f"<td>{_pct(f['coverage'])}</td><td{mark}>{_pct(f['precision'])}</td></tr>"
        )
    return f'<h2 id="summary">Summary</h2><table>{head}{"".join(rows)}</table>'


def _verdict(f: Mapping[str, Any]) -> str:
    seen = (
        f"at the threshold {f['threshold']:.2f}: {_pct(f['coverage'])} coverage, precision "
        f"{_pct(f['precision'])} on {f['judged']} tickets with a known final value"
    )
    if f["precision"] is None:
        return f'<p class="warn">No scored suggestion cleared the threshold ({_e(seen)}).</p>'
    below = f["classes_below_target"]
    classes = f" Classes below the target: {_e(', '.join(below))}." if below else ""
    if f["below_target"]:
        return f'<p class="bad">Below the target {f["target"]:.2f} {_e(seen)}.{classes}</p>'
    return f'<p class="ok">Target {f["target"]:.2f} met {_e(seen)}.{classes}</p>'


def _section(name: str, f: Mapping[str, Any]) -> str:
    return (
        f'<section id="field-{_e(name)}"><h2>{_e(name)}</h2>{_verdict(f)}'
        f"<h3>Precision and coverage against the threshold</h3>{curve_svg(f)}"
        f"<h3>If the threshold moved</h3>{_sweep_table(f)}"
        f"<h3>Per class</h3>{_class_table(f['classes'])}{_actions(f['by_action'])}</section>"
    )


def _sweep_table(f: Mapping[str, Any]) -> str:
    rows = []
    for point in f["sweep"]:
        here = " ← now" if abs(point["threshold"] - f["threshold"]) < 1e-9 else ""
        rows.append(
            f"<tr><td>{point['threshold']:.2f}{here}</td><td>{point['cleared']}</td>"
            f"<td>{_pct(point['coverage'])}</td><td>{point['judged']}</td>"
            f"<td>{_pct(point['precision'])}</td></tr>"
        )
    return (
        '<table class="sweep"><tr><th>threshold</th><th>cleared</th><th>coverage</th>'
        f"<th>final known</th><th>precision</th></tr>{''.join(rows)}</table>"
    )


def _class_table(classes: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in classes:
        mark = ' class="bad"' if c["below_target"] else ""
        flag = " (below target)" if c["below_target"] else ""
        rows.append(
            f'<tr><td class="l">{_e(c["name"] or c["label"])}</td><td class="l">{_e(c["label"])}'
            f'</td><td class="l">{_e(c["raw"] if c["raw"] is not None else "not in the mapping")}'
            f"</td><td>{c['suggestions']}</td><td>{_pct(c['agreement'])}</td>"
            f"<td>{c['cleared']}</td><td{mark}>{_pct(c['precision'])}{flag}</td>"
            f"<td>{c['final']}</td><td>{_pct(c['recall_at_threshold'])}</td></tr>"
        )
    return (
        '<table class="per-class"><tr><th class="l">class</th><th class="l">label</th>'
        '<th class="l">raw value</th><th>suggested</th><th>agreement</th><th>cleared</th>'
        "<th>precision</th><th>final</th><th>found at threshold</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _actions(by_action: Mapping[str, Mapping[str, Any]]) -> str:
    if not by_action:
        return ""
    items = "".join(
        f"<li>{_e(action)}: {a['suggestions']} suggestions, agreement {_pct(a['agreement'])} "
        f"on {a['final_known']} with a known final value</li>"
        for action, a in by_action.items()
    )
    return f"<h3>By what the worker did</h3><ul>{items}</ul>"


def curve_svg(f: Mapping[str, Any], width: int = 520, height: int = 300) -> str:
    """Precision (blue) and coverage (green) against the threshold, 0.5–1 × 0–1, as SVG."""
    pad = 45

    def x(t: float) -> float:
        return pad + (t - 0.5) / 0.5 * (width - 2 * pad)

    def y(v: float) -> float:
        return height - pad - v * (height - 2 * pad)

    def line(key: str) -> str:
        points = [(p["threshold"], p[key]) for p in f["sweep"] if p[key] is not None]
        return " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)

    now_x, target_y = x(f["threshold"]), y(f["target"])
    return (
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="precision and coverage against the '
        f'threshold for {_e(f["field"])}">'
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        f'stroke="#333"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" '
        f'stroke="#333"/><text x="{width / 2}" y="{height - 10}" text-anchor="middle" '
        f'font-size="12">threshold</text><text x="{pad}" y="{height - pad + 14}" '
        f'font-size="10" text-anchor="middle">0.5</text><text x="{width - pad}" '
        f'y="{height - pad + 14}" font-size="10" text-anchor="middle">1</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">1</text>'
        f'<text x="{pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">0</text>'
        f'<line x1="{pad}" y1="{target_y:.1f}" x2="{width - pad}" y2="{target_y:.1f}" '
        f'stroke="#a11" stroke-dasharray="4 3"/><text x="{width - pad}" '
        f'y="{target_y - 4:.1f}" text-anchor="end" font-size="11" fill="#a11">target '
        f'{f["target"]:.2f}</text><line x1="{now_x:.1f}" y1="{pad}" x2="{now_x:.1f}" '
        f'y2="{height - pad}" stroke="#888" stroke-dasharray="2 2"><title>current threshold '
        f"{f['threshold']:.2f}</title></line>"
        f'<polyline class="precision" fill="none" stroke="#1e5ac8" stroke-width="2" '
        f'points="{line("precision")}"/><polyline class="coverage" fill="none" '
        f'stroke="#176317" stroke-width="2" points="{line("coverage")}"/>'
        f'<text x="{pad + 6}" y="{pad + 12}" font-size="11" fill="#1e5ac8">precision</text>'
        f'<text x="{pad + 6}" y="{pad + 26}" font-size="11" fill="#176317">coverage</text></svg>'
    )
