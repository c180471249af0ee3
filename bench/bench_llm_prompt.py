"""Prompt size per ticket of the LLM classifier on the shared data (issue 12, cost and rate).

``python -m bench.bench_llm_prompt [--data DIR] [--limit N] [--max-input-chars N]`` prints one
JSON object. For every data set in ``--data`` (default ``../shared/data``) it builds the exact
request ``enrichers.llm_classifier.LlmClassifier`` would send for each ticket (no request is
sent) under two label sets:

* ``starter``: the shipped ``it_service_desk`` taxonomy with every label bound (category,
  subcategory, impact, urgency: what a desk without history starts from), real descriptions;
* ``own``: the data set's own label columns (Endava: category, sub_category1 as subcategory,
  impact, urgency; NLBSE: label as category). Their codes have no descriptions, so each label
  gets a stand-in: the starter taxonomies' descriptions in turn (the same length a real one has).

Per data set and label set: labels per field, the fixed part (system message + response schema)
in chars, the ticket part (user message) and the whole prompt as median / p95 chars and
estimated tokens, the share of tickets cut at ``max_input_chars``, the completion budget
(``max_tokens``) and how fast requests are built. Tokens are estimated as ``ceil(chars / 4)``
plus 3 per message and 3 for the reply's priming (OpenAI's published rule of thumb for English;
Danish/German text and JSON run nearer 3 chars a token, so treat the figure as a lower bound
within about 25 %). tiktoken is not used: its encodings are fetched from the internet at first
use, which this workplace and a Functions instance cannot rely on.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from domain.mapping import FieldMapping
from domain.models import Ticket
from domain.taxonomy import TAXONOMY_DIR, compose_binding, load_taxonomy
from enrichers.llm_classifier import LlmClassifier

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: data set → (file, title column, body column, {field: label column})
SETS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "endava": (
        "endava-support-tickets/all_tickets.csv",
        "title",
        "body",
        {
            "category": "category",
            "subcategory": "sub_category1",
            "impact": "impact",
            "urgency": "urgency",
        },
    ),
    "nlbse": ("github-issues-nlbse24/issues_test.csv", "title", "body", {"category": "label"}),
}
FIELDS_SHOWN = {"title": "short_description", "description": "description"}


def estimate_tokens(chars: int, messages: int = 2) -> int:
    """``ceil(chars / 4)`` + 3 per message + 3 (see the module docstring)."""
    return math.ceil(chars / 4) + 3 * messages + 3


def starter_mapping() -> FieldMapping:
    """``it_service_desk`` with every label of category, subcategory, impact and urgency bound."""
    taxonomy = load_taxonomy("it_service_desk", TAXONOMY_DIR)
    labels = taxonomy.field_labels()
    values = {
        f: {x: x for x in labels[f]} for f in ("category", "subcategory", "impact", "urgency")
    }
    fields = {**FIELDS_SHOWN, **{f: f for f in values}}
    binding = {"version": 1, "fields": fields, "values": values}
    return FieldMapping.model_validate(compose_binding(binding, taxonomy, "it_service_desk"))


def stand_in_descriptions() -> list[str]:
    """Every label description of the shipped starter taxonomies, in file order."""
    out: list[str] = []
    for path in sorted(TAXONOMY_DIR.glob("*.yaml")):
        for labels in load_taxonomy(path.stem, TAXONOMY_DIR).field_labels().values():
            out.extend(label.description for label in labels.values())
    return out


def own_mapping(labels: dict[str, list[str]]) -> FieldMapping:
    """The data set's label codes as canonical labels, each with a stand-in description."""
    texts = stand_in_descriptions()
    values = {f: {_label(x): x for x in sorted(v)} for f, v in labels.items()}
    descriptions: dict[str, dict[str, str]] = {}
    k = 0
    for field, table in values.items():
        for label in table:
            descriptions.setdefault(field, {})[label] = texts[k % len(texts)]
            k += 1
    fields = {**FIELDS_SHOWN, **{f: f for f in values}}
    return FieldMapping.model_validate(
        {
            "version": 1,
            "fields": fields,
            "values": values,
            "descriptions": descriptions,
            "priority_matrix": {},
        }
    )


def _label(code: str) -> str:
    text = "".join(c if c.isalnum() else "_" for c in code.lower()).strip("_")
    return text if text[:1].isalpha() else f"c{text}"


def read_set(
    path: Path, title: str, body: str, columns: dict[str, str], limit: int | None
) -> tuple[list[Ticket], dict[str, list[str]]]:
    """(tickets, field → distinct labels) of one CSV."""
    csv.field_size_limit(2**31 - 1)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if limit:
        rows = rows[:limit]
    tickets = [Ticket(title=r[title] or "", description=r[body] or "") for r in rows]
    labels = {f: sorted({r[c] for r in rows if r[c]}) for f, c in columns.items()}
    return tickets, labels


def measure(clf: LlmClassifier, tickets: Sequence[Ticket], max_input_chars: int) -> dict[str, Any]:
    """Prompt size figures of ``clf`` over ``tickets`` (requests are built, never sent)."""
    fixed, user, total, budgets, cut = [], [], [], [], 0
    started = time.perf_counter()
    requests = [clf.build_request(t) for t in tickets]
    seconds = time.perf_counter() - started
    for request in requests:
        if request is None:
            continue
        system = request["messages"][0]["content"]
        text = request["messages"][1]["content"]
        schema = json.dumps(request["response_format"], separators=(",", ":"))
        fixed.append(len(system) + len(schema))
        user.append(len(text))
        total.append(len(system) + len(schema) + len(text))
        budgets.append(request["max_tokens"])
        cut += text.endswith("…") and len(text) >= max_input_chars - 5
    built = len(user)

    def stats(values: list[int]) -> dict[str, float]:
        arr = np.asarray(values, dtype=np.float64)
        return {
            "median": round(float(np.median(arr)), 1),
            "p95": round(float(np.percentile(arr, 95)), 1),
        }

    tokens = [estimate_tokens(n) for n in total]
    return {
        "tickets": len(tickets),
        "requests": built,
        "labels_per_field": {f: len(clf.mapping.values[f]) for f in clf.fields},
        "fixed_chars": stats(fixed),
        "ticket_chars": stats(user),
        "prompt_chars": stats(total),
        "prompt_tokens_estimated": stats(tokens),
        "cut_at_max_input_share": round(cut / built, 4) if built else 0.0,
        "max_tokens": stats(budgets),
        "requests_built_per_s": round(built / seconds, 1) if seconds else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="tickets per data set")
    parser.add_argument("--max-input-chars", type=int, default=4000)
    args = parser.parse_args(argv)
    starter = starter_mapping()
    report: dict[str, Any] = {
        "token_rule": "ceil(chars/4) + 3 per message + 3",
        "max_input_chars": args.max_input_chars,
        "data_sets": {},
    }
    for name, (file, title, body, columns) in SETS.items():
        path = args.data / file
        if not path.exists():
            report["data_sets"][name] = {"skipped": f"{file} not found"}
            continue
        tickets, labels = read_set(path, title, body, columns, args.limit)
        out = {}
        for label_set, mapping in (("starter", starter), ("own", own_mapping(labels))):
            fields = list(mapping.values)
            clf = LlmClassifier(
                mapping, _never, fields=fields, max_input_chars=args.max_input_chars
            )
            out[label_set] = measure(clf, tickets, args.max_input_chars)
        report["data_sets"][name] = out
    print(json.dumps(report, indent=2))
    return 0


def _never(request: Any) -> Any:
    raise AssertionError("the bench sends no request")


if __name__ == "__main__":
    raise SystemExit(main())
