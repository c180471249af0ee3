"""Precision and coverage of the keyword layer on the hand-labelled multilingual ticket set.

``python -m bench.bench_keywords [--data FILE] [--baseline COMMIT|none] [--errors]`` prints one
JSON object. For each variant (the current enricher and default mapping; the same without
compound matching; the enricher and mapping as they were at ``--baseline``, loaded from git in
the same run) and each field (category, subcategory, impact, urgency):

* ``written``: suggestions that clear the mapping's ``min_confidence`` for the field (what the
  worker would write on an empty field); ``suggested``: everything the enricher returns (its
  0.75 floor), which also hides later enrichers' guesses for that field.
* ``precision`` = correct fills / all fills; a fill where the label is null (a careful person
  would leave the field empty) counts as wrong.
* ``coverage`` = labelled tickets filled / labelled tickets; ``recall`` = correct / labelled.

``by_lang`` repeats ``written`` precision and coverage per language. ``--errors`` lists the
wrong fills of the current variant on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from domain.mapping import FieldMapping, load_mapping
from domain.models import Suggestion, Ticket
from enrichers.keywords import KeywordEnricher

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "tests" / "data" / "keyword_tickets.jsonl"
#: The last commit of the keyword enricher and mapping before compounds and cue weights.
BASELINE_COMMIT = "4a966a4bca51279d29b7414972a0fa3fb094096b"
FIELDS = ("category", "subcategory", "impact", "urgency")

Row = dict[str, Any]
Enrich = Callable[[Ticket], Sequence[Suggestion]]


def load_rows(path: Path = DEFAULT_DATA) -> list[Row]:
    """The labelled tickets, one JSON object per line."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def _score(pairs: Iterable[tuple[str | None, str | None]]) -> dict[str, Any]:
    """Precision/coverage/recall of (expected, filled) pairs."""
    labelled = filled = filled_labelled = correct = 0
    for expected, got in pairs:
        labelled += expected is not None
        filled += got is not None
        filled_labelled += got is not None and expected is not None
        correct += got is not None and got == expected
    return {
        "labelled": labelled,
        "filled": filled,
        "correct": correct,
        "precision": _ratio(correct, filled),
        "coverage": _ratio(filled_labelled, labelled),
        "recall": _ratio(correct, labelled),
    }


def predict(enrich: Enrich, mapping: FieldMapping, row: Row) -> dict[str, dict[str, str | None]]:
    """Per field the value suggested and the value written (at the mapping's threshold)."""
    ticket = Ticket(title=row["title"], description=row["description"])
    found = {s.field: s for s in enrich(ticket)}
    out: dict[str, dict[str, str | None]] = {"suggested": {}, "written": {}}
    for field in FIELDS:
        s = found.get(field)
        out["suggested"][field] = s.value if s else None
        ok = s is not None and s.confidence >= mapping.threshold(field)
        out["written"][field] = s.value if ok and s else None
    return out


def evaluate(enrich: Enrich, mapping: FieldMapping, rows: Sequence[Row]) -> dict[str, Any]:
    """Scores per level (suggested, written) and field, and per language for ``written``."""
    predictions = [predict(enrich, mapping, row) for row in rows]
    result: dict[str, Any] = {}
    for level in ("suggested", "written"):
        result[level] = {
            f: _score((r[f], p[level][f]) for r, p in zip(rows, predictions, strict=True))
            for f in FIELDS
        }
    by_lang: dict[str, Any] = {}
    for lang in sorted({r["lang"] for r in rows}):
        pairs = [(r, p) for r, p in zip(rows, predictions, strict=True) if r["lang"] == lang]
        by_lang[lang] = {}
        for f in FIELDS:
            s = _score((r[f], p["written"][f]) for r, p in pairs)
            by_lang[lang][f] = {"precision": s["precision"], "coverage": s["coverage"]}
    result["by_lang"] = by_lang
    return result


def errors(enrich: Enrich, mapping: FieldMapping, rows: Sequence[Row]) -> list[str]:
    """One line per wrong written fill and per labelled field left empty."""
    lines = []
    for row in rows:
        got = predict(enrich, mapping, row)["written"]
        for f in FIELDS:
            if got[f] is not None and got[f] != row[f]:
                lines.append(f"WRONG {row['id']} {f}: {got[f]} (expected {row[f]}) {row['title']}")
            elif got[f] is None and row[f] is not None:
                lines.append(f"EMPTY {row['id']} {f}: expected {row[f]} {row['title']}")
    return lines


def _enricher_fn(enricher: Any) -> Enrich:
    return lambda ticket: enricher.enrich(ticket, {})


def baseline(commit: str) -> tuple[Enrich, FieldMapping]:
    """The keyword enricher and default mapping as they were at ``commit`` (read from git)."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "baseline_keywords.py"
        source.write_text(show("enrichers/keywords.py"), encoding="utf-8")
        spec = importlib.util.spec_from_file_location("_bench_keywords_baseline", source)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {source}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        path = Path(tmp) / "mapping.yaml"
        path.write_text(show("domain/data/servicenow_default_mapping.yaml"), encoding="utf-8")
        mapping = load_mapping(path)
    return _enricher_fn(module.KeywordEnricher(mapping)), mapping


def run(data: Path, baseline_commit: str | None) -> dict[str, Any]:
    """The whole report as one JSON-ready dict."""
    rows = load_rows(data)
    mapping = load_mapping()
    report: dict[str, Any] = {
        "data": str(data.relative_to(ROOT) if data.is_relative_to(ROOT) else data),
        "tickets": len(rows),
        "languages": {lang: sum(r["lang"] == lang for r in rows) for lang in _langs(rows)},
        "thresholds": {f: mapping.threshold(f) for f in FIELDS},
        "current": evaluate(_enricher_fn(KeywordEnricher(mapping)), mapping, rows),
    }
    no_compounds = KeywordEnricher(mapping, compounds=False)
    report["current_without_compounds"] = _brief(
        evaluate(_enricher_fn(no_compounds), mapping, rows)
    )
    if baseline_commit:
        try:
            enrich, old_mapping = baseline(baseline_commit)
        except (subprocess.CalledProcessError, OSError, SyntaxError, ImportError) as exc:
            report["baseline"] = {"error": f"{type(exc).__name__}: cannot load {baseline_commit}"}
        else:
            report["baseline"] = {"commit": baseline_commit[:12]}
            report["baseline"].update(evaluate(enrich, old_mapping, rows))
    return report


def _langs(rows: Sequence[Row]) -> list[str]:
    return sorted({r["lang"] for r in rows})


def _brief(result: Mapping[str, Any]) -> dict[str, Any]:
    """Only precision and coverage of written values per field."""
    return {
        f: {k: result["written"][f][k] for k in ("filled", "precision", "coverage")} for f in FIELDS
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; ``--errors`` lists the current variant's mistakes on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--baseline", default=BASELINE_COMMIT, help="git commit, or 'none'")
    parser.add_argument("--errors", action="store_true")
    args = parser.parse_args(argv)
    commit = None if args.baseline == "none" else args.baseline
    print(json.dumps(run(args.data, commit), indent=1, ensure_ascii=False))
    if args.errors:
        mapping = load_mapping()
        lines = errors(_enricher_fn(KeywordEnricher(mapping)), mapping, load_rows(args.data))
        print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
