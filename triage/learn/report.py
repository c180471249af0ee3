"""Held-out evaluation per field, and the self-contained HTML report an admin reads.

The report answers "may we switch auto-fill on for this field?": the headline coverage at the
stored threshold and the precision it achieved on tickets the model never saw, per-class
precision and recall, a confusion matrix, and the precision–coverage curve (inline SVG). It
opens with the run it records (date, data file and hash, columns, parameters, model hash) and
names classes as the mapping does, in natural order.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from triage.learn.evaluate import (
    FieldEvaluation,
    class_report,
    confusion,
    drop_rare,
    precision_coverage_curve,
    score_field,
)
from triage.learn.run_record import LabelName, model_version, run_section

__all__ = ["evaluate_fields", "render_html", "write_html"]


def evaluate_fields(
    texts: Sequence[str],
    labels: Mapping[str, Sequence[str | None]],
    *,
    config: Any = None,
    parents: Mapping[str, str] | None = None,
    test_size: float = 0.2,
    seed: int = 0,
) -> dict[str, FieldEvaluation]:
    """Per field: drop rare classes, split stratified, train, score the held-out rows.

    A field with a parent (subcategory) is scored given the true parent value, as when a
    person has already chosen the category.
    """
    from triage.learn.train import TrainConfig, split_rows, train_model

    config = config or TrainConfig()
    parents = dict(parents or {})
    results: dict[str, FieldEvaluation] = {}
    for name, column in labels.items():
        kept, dropped_rows, _ = drop_rare(column, config.min_class)
        tr, te = split_rows([str(column[i]) for i in kept], test_size, seed)
        train_idx, test_idx = [kept[i] for i in tr], [kept[i] for i in te]
        parent = parents.get(name)
        train_labels = {name: [column[i] for i in train_idx]}
        if parent:
            train_labels = {parent: [labels[parent][i] for i in train_idx], **train_labels}
        model = train_model(
            [texts[i] for i in train_idx],
            train_labels,
            config=config,
            parents={name: parent} if parent else None,
        )
        given = [{parent: labels[parent][i]} for i in test_idx] if parent else None
        predictions = model.predict([texts[i] for i in test_idx], given)[name]
        results[name] = score_field(
            [str(column[i]) for i in test_idx],
            predictions,
            n_train=len(train_idx),
            dropped_rows=dropped_rows,
            threshold=model.metadata["fields"][name]["threshold"],
        )
        results[name].model = model_version(model)
    return results


Names = Mapping[str, Mapping[str, LabelName]]


def write_html(
    results: Mapping[str, FieldEvaluation],
    path: Path,
    *,
    title: str,
    target: float = 0.95,
    run: Mapping[str, Any] | None = None,
    names: Names | None = None,
) -> None:
    """Write the report to ``path``; ``target`` is the precision the thresholds aim for."""
    text = render_html(results, title=title, target=target, run=run, names=names)
    path.write_text(text, encoding="utf-8")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.ok{color:#176317}.bad{color:#a11}
.warn{color:#8a5a00}
section{border-top:2px solid #ddd;margin-top:2rem}
"""


def render_html(
    results: Mapping[str, FieldEvaluation],
    *,
    title: str,
    target: float = 0.95,
    run: Mapping[str, Any] | None = None,
    names: Names | None = None,
) -> str:
    """The whole report as one HTML document (no external resources).

    ``run`` (``run_record.run_block``) opens it; ``names`` (``run_record.label_names``) shows
    classes with the mapping's raw values and human labels.
    """
    names = names or {}
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Each field was trained on a stratified split and scored on held-out tickets. "
        "The model fills a field only when its confidence clears the stored threshold; "
        "<b>coverage</b> is the share of tickets filled, <b>precision</b> the share of those "
        "filled correctly.</p>",
        run_section(run) if run else "",
        _summary_table(results),
    ]
    for name, ev in results.items():
        parts.append(_field_section(name, ev, target, names.get(name, {})))
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _summary_table(results: Mapping[str, FieldEvaluation]) -> str:
    keys = [
        "n_train",
        "n_test",
        "accuracy",
        "macro_f1",
        "coverage_at_precision_95",
        "threshold_at_precision_95",
        "coverage_at_threshold",
        "precision_at_threshold",
        "dropped_rows",
    ]
    head = "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys)
    rows = []
    for name, ev in results.items():
        s = ev.summary()
        cells = "".join(f"<td>{_fmt(s[k])}</td>" for k in keys)
        rows.append(f'<tr><th class="l">{html.escape(name)}</th>{cells}</tr>')
    return (
        '<h2 id="summary">Summary</h2><table><tr><th class="l">field</th>'
        f"{head}</tr>{''.join(rows)}</table>"
    )


def _field_section(
    name: str, ev: FieldEvaluation, target: float, names: Mapping[str, LabelName]
) -> str:
    s = ev.summary()
    verdict = _verdict(s, target)
    return (
        f'<section id="field-{html.escape(name)}"><h2>{html.escape(name)}</h2>{verdict}'
        f"<h3>Precision–coverage curve</h3>{_curve_svg(ev, target)}"
        f"<h3>Per-class precision and recall</h3>{_class_table(ev, names)}"
        f"<h3>Confusion matrix</h3>{_confusion_table(ev, names)}</section>"
    )


def _verdict(s: dict[str, Any], target: float) -> str:
    """Whether the stored threshold kept its promise on the test tickets, with the uncertainty."""
    precision = s["precision_at_threshold"]
    if precision is None:
        return (
            f'<p class="bad">No test ticket cleared the stored threshold: at {target:.2f} '
            "precision this field is never filled.</p>"
        )
    low, high = s["precision_at_threshold_interval_95"]
    seen = (
        f"{precision:.3f} precision on {s['filled_at_threshold']} filled test tickets "
        f"(95 % interval {low:.3f}–{high:.3f}), {s['coverage_at_threshold']:.1%} coverage"
    )
    if precision >= target:
        return f'<p class="ok">At the stored threshold: {seen}. The target {target:.2f} is met.</p>'
    if high >= target:
        return (
            f'<p class="warn">At the stored threshold: {seen}. Below {target:.2f} as observed, '
            "but within what this many test tickets can tell apart: a larger test set, or "
            "shadow mode, settles it.</p>"
        )
    return (
        f'<p class="bad">At the stored threshold: {seen}. Clearly below {target:.2f}: review '
        "before switching auto-fill on.</p>"
    )


def _class_table(ev: FieldEvaluation, names: Mapping[str, LabelName]) -> str:
    """Classes in natural order; with a mapping, its name and raw value for each."""
    extra_head = '<th class="l">name</th><th class="l">raw value</th>' if names else ""
    rows = []
    for label, r in class_report(ev.y_true, ev.y_pred).items():
        extra = ""
        if names:
            name = names.get(label)
            human = name.human if name and name.human else "–"
            raw = name.raw if name and name.raw is not None else "not in the mapping"
            extra = f'<td class="l">{html.escape(human)}</td><td class="l">{html.escape(raw)}</td>'
        rows.append(
            f'<tr><td class="l">{html.escape(label)}</td>{extra}<td>{r["precision"]:.3f}</td>'
            f"<td>{r['recall']:.3f}</td><td>{r['f1']:.3f}</td><td>{int(r['support'])}</td></tr>"
        )
    return (
        f'<table class="per-class"><tr><th class="l">label</th>{extra_head}<th>precision</th>'
        f"<th>recall</th><th>F1</th><th>support</th></tr>{''.join(rows)}</table>"
    )


def _label_cell(tag: str, label: str, names: Mapping[str, LabelName], cls: str = "") -> str:
    name = names.get(label)
    text = name.display(label) if name else label
    tip = f' title="{html.escape(label)} = raw {html.escape(name.raw or "")}"' if name else ""
    return f"<{tag}{cls}{tip}>{html.escape(text)}</{tag}>"


def _confusion_table(ev: FieldEvaluation, names: Mapping[str, LabelName]) -> str:
    labels, matrix = confusion(ev.y_true, ev.y_pred)
    head = "".join(_label_cell("th", label, names) for label in labels)
    body = []
    for label, row in zip(labels, matrix, strict=True):
        cells = "".join(
            f'<td style="background:rgba(30,90,200,{min(v / max(max(row), 1), 1) * 0.5:.2f})">'
            f"{v}</td>"
            for v in row
        )
        head_cell = _label_cell("th", label, names, ' class="l"')
        body.append(f"<tr>{head_cell}{cells}</tr>")
    return (
        '<table class="confusion"><tr><th class="l">true \\ predicted</th>'
        f"{head}</tr>{''.join(body)}</table>"
    )


def _curve_svg(ev: FieldEvaluation, target: float, width: int = 520, height: int = 320) -> str:
    correct = np.array(ev.y_true) == np.array(ev.y_pred)
    _, coverage, precision = precision_coverage_curve(ev.confidence, correct)
    pad = 45
    lo = float(min(0.5, precision.min())) if precision.size else 0.5

    def xy(cov: float, prec: float) -> str:
        x = pad + cov * (width - 2 * pad)
        y = height - pad - (prec - lo) / (1 - lo) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    points = " ".join(xy(c, p) for c, p in zip(coverage, precision, strict=True))
    target_y = xy(0, target).split(",")[1]
    marks = [
        f'<line x1="{pad}" y1="{target_y}" x2="{width - pad}" y2="{target_y}" '
        'stroke="#a11" stroke-dasharray="4 3"/>',
        f'<text x="{width - pad}" y="{float(target_y) - 4}" text-anchor="end" font-size="11" '
        f'fill="#a11">precision {target:.2f}</text>',
    ]
    s = ev.summary()
    if s["precision_at_threshold"] is not None:
        cx, cy = xy(s["coverage_at_threshold"], s["precision_at_threshold"]).split(",")
        marks.append(
            f'<circle cx="{cx}" cy="{cy}" r="5" fill="#176317"><title>stored '
            f"threshold {s['threshold_at_precision_95']}</title></circle>"
        )
    axes = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        f'stroke="#333"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" '
        f'stroke="#333"/><text x="{width / 2}" y="{height - 10}" text-anchor="middle" '
        f'font-size="12">coverage (share of tickets filled)</text><text x="12" y="{height / 2}" '
        f'font-size="12" transform="rotate(-90 12 {height / 2})" text-anchor="middle">'
        f'precision</text><text x="{pad}" y="{height - pad + 14}" font-size="10">0</text>'
        f'<text x="{width - pad}" y="{height - pad + 14}" font-size="10">1</text>'
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">1</text>'
        f'<text x="{pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">{lo:.2f}</text>'
    )
    return (
        f'<svg class="curve" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="precision-coverage curve">{axes}'
        f'<polyline fill="none" stroke="#1e5ac8" stroke-width="2" points="{points}"/>'
        f"{''.join(marks)}</svg>"
    )
