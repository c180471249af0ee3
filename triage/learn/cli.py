"""The ``train`` and ``evaluate`` sub-commands of ``python -m triage``.

``train --data FILE.csv --text title,body --label category=category --out DIR`` or
``train --from servicenow [--query Q] --out DIR`` (closed tickets, paged through the connector).
``evaluate --data FILE.csv ... [--json] [--html REPORT.html]`` trains on a stratified split and
scores the rest.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from domain.errors import ConfigError

if TYPE_CHECKING:
    from connectors.base import SourceRecord
    from domain.settings import Settings

__all__ = [
    "DEFAULT_SERVICENOW_QUERY",
    "LabelledData",
    "RecordSource",
    "add_evaluate_parser",
    "add_train_parser",
    "labelled_from_connector",
    "read_labelled_csv",
    "run_evaluate",
    "run_train",
]

log = logging.getLogger(__name__)

#: Resolved (6) or closed (7) incidents, oldest first: their labels were reviewed by people.
DEFAULT_SERVICENOW_QUERY = "stateIN6,7^ORDERBYsys_id"
DEFAULT_SN_LABELS = ("category", "subcategory", "impact", "urgency")


class RecordSource(Protocol):
    """The part of ``connectors.base.Connector`` that training needs."""

    @property
    def system(self) -> str:
        """The platform name, e.g. ``servicenow``."""
        ...

    def iter_records(
        self, table: str, query: str, fields: Sequence[str], *, page_size: int | None = None
    ) -> Iterator[SourceRecord]:
        """Yield every record matching a platform query, paging in a stable order."""
        ...


class LabelledData:
    """Texts (title line + body, like ``Ticket.text``) and a label column per field."""

    def __init__(self, texts: list[str], labels: dict[str, list[str | None]], source: str):
        self.texts = texts
        self.labels = labels
        self.source = source


def _label_specs(specs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        field, _, column = spec.partition("=")
        out[field.strip()] = (column or field).strip()
    return out


def read_labelled_csv(
    path: str | Path, text_cols: Sequence[str], labels: dict[str, str]
) -> LabelledData:
    """Read a CSV; ``ConfigError`` names a missing column."""
    source = Path(path)
    csv.field_size_limit(2**31 - 1)  # pasted logs make huge fields
    try:
        with source.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in (*text_cols, *labels.values()) if c not in header]
            if missing:
                raise ConfigError(f"{source}: no column(s) {', '.join(missing)} (have {header})")
            records = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from exc
    texts = ["\n".join(r[c] or "" for c in text_cols).strip() for r in records]
    columns = {f: [(r[c] or "").strip() or None for r in records] for f, c in labels.items()}
    return LabelledData(texts, columns, source.name)


def labelled_from_connector(
    connector: RecordSource, settings: Settings, query: str, fields: Sequence[str]
) -> LabelledData:
    """Closed tickets through the connector, labels mapped to canonical values."""
    from domain.mapping import load_mapping

    mapping = load_mapping(settings.mapping_path)
    missing = [f for f in fields if f not in mapping.fields]
    if missing:
        raise ConfigError(f"the mapping has no platform field for {', '.join(missing)}")
    platform = [mapping.fields["title"], mapping.fields["description"], mapping.last_updated_by]
    platform += [mapping.fields[f] for f in fields]
    texts: list[str] = []
    labels: dict[str, list[str | None]] = {f: [] for f in fields}
    skipped = 0
    for record in connector.iter_records(mapping.table, query, sorted(set(platform))):
        values = record.fields
        # Last touched by us and never by a person: its labels are our own guesses.
        if (
            mapping.integration_user
            and values.get(mapping.last_updated_by) == mapping.integration_user
        ):
            skipped += 1
            continue
        title = str(values.get(mapping.fields["title"]) or "")
        body = str(values.get(mapping.fields["description"]) or "")
        texts.append(f"{title}\n{body}".strip())
        for f in fields:
            raw = values.get(mapping.fields[f])
            unset = mapping.is_unset(f, raw)
            labels[f].append(None if unset else mapping.to_canonical(f, str(raw)))
    log.info("fetched %d labelled tickets (%d skipped as machine-labelled)", len(texts), skipped)
    return LabelledData(texts, labels, f"{connector.system}:{mapping.table}")


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="labelled CSV file")
    parser.add_argument("--text", default="title,body", help="text column(s), comma-separated")
    parser.add_argument(
        "--label", action="append", default=[], metavar="FIELD=COL", help="a label field"
    )
    parser.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="CHILD=PARENT",
        help="condition CHILD on PARENT (default: subcategory=category)",
    )
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--min-class", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--c", type=float, default=0.3, help="SVM regularisation")
    parser.add_argument(
        "--jobs",
        type=int,
        default=-1,
        help="processes fitting folds in parallel (default -1: one per core; same model either way)",
    )


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train", help="train a text model and write a model directory"
    )
    _common_args(parser)
    parser.add_argument("--from", dest="source", choices=["csv", "servicenow"], default="csv")
    parser.add_argument("--query", help="ServiceNow encoded query (default: closed incidents)")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.set_defaults(handler=run_train)
    return parser


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate", help="train on a stratified split and score the rest"
    )
    _common_args(parser)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--html", help="write an HTML report for admins")
    parser.set_defaults(handler=run_evaluate)
    return parser


def _parents(args: argparse.Namespace, fields: Sequence[str]) -> dict[str, str]:
    parents = _label_specs(args.parent)
    if not args.parent and "subcategory" in fields and "category" in fields:
        parents = {"subcategory": "category"}
    return parents


def _train_config(args: argparse.Namespace) -> Any:
    from triage.learn.train import TrainConfig

    if not 0.5 <= args.target_precision < 1.0:
        raise ConfigError("--target-precision must be within 0.5..1")
    return TrainConfig(
        target_precision=args.target_precision,
        min_class=args.min_class,
        folds=args.folds,
        c=args.c,
        jobs=args.jobs,
    )


def _csv_data(args: argparse.Namespace) -> LabelledData:
    if not args.data:
        raise ConfigError("--data FILE.csv is required")
    if not args.label:
        raise ConfigError("name at least one --label FIELD=COLUMN")
    text_cols = [c.strip() for c in args.text.split(",") if c.strip()]
    return read_labelled_csv(args.data, text_cols, _label_specs(args.label))


def _servicenow_factory() -> tuple[RecordSource, Settings]:
    from connectors.servicenow import build_servicenow_connector
    from domain.settings import load_settings

    settings = load_settings()
    return build_servicenow_connector(settings), settings


def run_train(
    args: argparse.Namespace,
    *,
    connector_factory: Callable[[], tuple[RecordSource, Settings]] = _servicenow_factory,
    out: TextIO | None = None,
) -> int:
    """Handler of ``train``: fit and write a model directory."""
    from triage.learn.train import train_model

    if args.source == "servicenow":
        connector, settings = connector_factory()
        fields = list(_label_specs(args.label)) or list(DEFAULT_SN_LABELS)
        data = labelled_from_connector(
            connector, settings, args.query or DEFAULT_SERVICENOW_QUERY, fields
        )
    else:
        data = _csv_data(args)
    if not data.texts:
        raise ConfigError("no training tickets found")
    model = train_model(
        data.texts,
        data.labels,
        config=_train_config(args),
        parents=_parents(args, list(data.labels)),
        source=data.source,
    )
    target = model.save(args.out)
    stream = out or sys.stdout
    for name in model.fields:
        info = model.metadata["fields"][name]
        held = info["heldout"]
        stream.write(
            f"{name}: {info['n_train']} rows, {len(info['labels'])} labels, threshold "
            f"{info['threshold']}, held-out coverage {held['coverage_at_threshold']} at "
            f"precision {held['precision_at_threshold']}\n"
        )
    stream.write(f"model written to {target}\n")
    return 0


def run_evaluate(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Handler of ``evaluate``: per field, train on a split and score the held-out rows."""
    from triage.learn.report import evaluate_fields, write_html

    data = _csv_data(args)
    results = evaluate_fields(
        data.texts,
        data.labels,
        config=_train_config(args),
        parents=_parents(args, list(data.labels)),
        test_size=args.test_size,
        seed=args.seed,
    )
    stream = out or sys.stdout
    if args.html:
        write_html(
            results,
            Path(args.html),
            title=f"Model evaluation: {data.source}",
            target=args.target_precision,
        )
    if args.json:
        payload = {"fields": {name: ev.summary() for name, ev in results.items()}}
        stream.write(json.dumps(payload) + "\n")
        return 0
    for name, ev in results.items():
        s = ev.summary()
        stream.write(
            f"{name}: accuracy {s['accuracy']}, macro-F1 {s['macro_f1']}, coverage@95% "
            f"{s['coverage_at_precision_95']}, threshold {s['threshold_at_precision_95']}\n"
        )
    return 0
