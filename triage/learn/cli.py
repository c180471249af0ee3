"""The ``train`` and ``evaluate`` sub-commands of ``python -m triage``.

``train --data FILE.csv --text title,body --label category=category --out DIR``,
``train --from servicenow [--query Q] --out DIR`` (closed incidents, paged through the connector)
or ``train --from dynamics [--filter ODATA_FILTER] --label category=_subjectid_value --out DIR``
(resolved cases, paged through the Dataverse connector; see ``triage.learn.sources``).
``evaluate --data FILE.csv ... [--json] [--html REPORT.html]`` trains on a stratified split and
scores the rest.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from domain.errors import ConfigError
from triage.learn.sources import (
    DEFAULT_SERVICENOW_QUERY,
    LabelledData,
    RecordSource,
    dataverse_filter,
    label_columns,
    labelled_from_connector,
)

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from domain.settings import Settings

__all__ = [
    "DEFAULT_SERVICENOW_QUERY",
    "ConnectorFactory",
    "LabelledData",
    "RecordSource",
    "add_evaluate_parser",
    "add_train_parser",
    "labelled_from_connector",
    "read_labelled_csv",
    "read_summary_pairs",
    "run_evaluate",
    "run_train",
]

#: Builds the connector a ``train --from <platform>`` pulls through, and the settings it used.
ConnectorFactory = Callable[[], "tuple[RecordSource, Settings]"]
#: ``--from`` choice → the mapping ``system`` it needs.
_PLATFORM_SYSTEM = {"servicenow": "servicenow", "dynamics": "dataverse"}


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
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        help="cross-validation folds (default: 5 below 10,000 labelled rows, 3 from there)",
    )
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
    parser.add_argument(
        "--from", dest="source", choices=["csv", "servicenow", "dynamics"], default="csv"
    )
    parser.add_argument("--query", help="ServiceNow encoded query (default: closed incidents)")
    parser.add_argument(
        "--filter",
        dest="odata_filter",
        metavar="ODATA_FILTER",
        help="Dynamics: OData $filter AND-ed with resolved cases (statecode eq 1)",
    )
    parser.add_argument(
        "--mapping",
        help="admin mapping (default: ENRICH_MAPPING_PATH / ENRICH_DATAVERSE_MAPPING_PATH)",
    )
    parser.add_argument(
        "--summary",
        metavar="COL",
        help="also learn the desk's summary from COL (the human short descriptions) and the "
        "--text columns other than COL (CSV only)",
    )
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
    parser.add_argument(
        "--mapping", help="admin mapping: show classes by its raw values (and human labels)"
    )
    parser.add_argument(
        "--model",
        help="score this stored model (directory or https URL) on every row instead of "
        "training on a split; the rows should be tickets it was not trained on",
    )
    from triage.learn.evaluate_cmd import add_llm_arguments

    add_llm_arguments(parser)  # --llm: score the configured LLM classifier the same way
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
    return read_labelled_csv(args.data, _text_columns(args), _label_specs(args.label))


def _servicenow_factory() -> tuple[RecordSource, Settings]:
    from connectors.servicenow import build_servicenow_connector
    from domain.settings import load_settings

    settings = load_settings()
    return build_servicenow_connector(settings), settings


def _dynamics_factory() -> tuple[RecordSource, Settings]:
    from connectors.dataverse import build_dataverse_connector
    from domain.settings import load_settings

    settings = load_settings()
    # Training only reads: no column is written, so no write types are needed.
    return build_dataverse_connector(settings, field_types={}), settings


def _source_mapping(args: argparse.Namespace, settings: Settings) -> FieldMapping:
    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping

    if args.source == "dynamics":
        path = args.mapping or settings.dataverse_mapping_path or DYNAMICS_DEFAULT_MAPPING_PATH
    else:
        path = args.mapping or settings.mapping_path
    mapping = load_mapping(path)
    if mapping.system != _PLATFORM_SYSTEM[args.source]:
        raise ConfigError(
            f"--from {args.source} needs a mapping with system: {_PLATFORM_SYSTEM[args.source]}"
            f" (the mapping's is {mapping.system})"
        )
    return mapping


def _platform_query(args: argparse.Namespace) -> str:
    if args.source == "dynamics":
        if args.query is not None:
            raise ConfigError("--query is ServiceNow's; with --from dynamics use --filter")
        return dataverse_filter(args.odata_filter)
    if args.odata_filter is not None:
        raise ConfigError("--filter is Dynamics'; with --from servicenow use --query")
    return str(args.query or DEFAULT_SERVICENOW_QUERY)


def _connector_data(
    args: argparse.Namespace, factory: ConnectorFactory | None, out: TextIO
) -> LabelledData:
    """Pull human-labelled records of ``--from servicenow|dynamics`` through the connector."""
    query = _platform_query(args)  # refuse a bad option before any connection is made
    if factory is None:
        factory = _dynamics_factory if args.source == "dynamics" else _servicenow_factory
    connector, settings = factory()
    mapping = _source_mapping(args, settings)
    data = labelled_from_connector(connector, mapping, query, label_columns(args.label, mapping))
    fallback = f", {data.from_fallback} read from their first e-mail" if data.from_fallback else ""
    out.write(
        f"fetched {len(data.texts)} labelled records from {data.source} "
        f"({data.skipped} skipped as machine-labelled{fallback})\n"
    )
    return data


def run_train(
    args: argparse.Namespace,
    *,
    connector_factory: ConnectorFactory | None = None,
    out: TextIO | None = None,
) -> int:
    """Handler of ``train``: fit and write a model directory.

    ``connector_factory`` builds the connector of ``--from servicenow|dynamics`` (default:
    from the ``ENRICH_*`` settings of that platform).
    """
    from triage.learn.train import train_model

    stream = out or sys.stdout
    if args.source in _PLATFORM_SYSTEM:
        data = _connector_data(args, connector_factory, stream)
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
    for name in model.fields:
        info = model.metadata["fields"][name]
        held = info["heldout"]
        stream.write(
            f"{name}: {info['n_train']} rows, {len(info['labels'])} labels, threshold "
            f"{info['threshold']}, held-out coverage {held['coverage_at_threshold']} at "
            f"precision {held['precision_at_threshold']}\n"
        )
    if getattr(args, "summary", None):
        _train_summary(args, target, stream)
    stream.write(f"model written to {target}\n")
    return 0


def read_summary_pairs(
    path: str | Path, body_cols: Sequence[str], title_col: str
) -> tuple[list[str], list[str]]:
    """(descriptions, human short descriptions) of a CSV; ``ConfigError`` names a missing column."""
    data = read_labelled_csv(path, body_cols, {"summary": title_col})
    return data.texts, [t or "" for t in data.labels["summary"]]


def _train_summary(args: argparse.Namespace, target: Path, stream: TextIO) -> None:
    """``train --summary COL``: fit the summary model and add it to the model directory."""
    from triage.learn.summary_train import train_summary

    if args.source != "csv":
        raise ConfigError("--summary needs --data FILE.csv (not yet read from a platform)")
    body_cols = [c for c in _text_columns(args) if c != args.summary]
    if not body_cols:
        raise ConfigError("--summary: no --text column other than the summary column")
    bodies, titles = read_summary_pairs(args.data, body_cols, args.summary)
    from triage.learn.summary_check import holdout_check

    check = holdout_check(bodies, titles)
    if not check.keep:
        stream.write(
            f"summary: not kept: on {check.held_out} held-out pairs the learned summary scores "
            f"ROUGE-L {check.learned:.3f}, the extractive one {check.extractive:.3f}; "
            "the extractive summary stays\n"
        )
        return
    model = train_summary(bodies, titles, source=Path(args.data).name)
    model.save(target)
    meta = model.metadata
    stream.write(
        f"summary: {meta['n_train']} (description, {args.summary}) pairs, "
        f"{meta['n_filler']['word']} filler words learned; on {check.held_out} held-out pairs "
        f"ROUGE-L {check.learned:.3f} against the extractive {check.extractive:.3f}\n"
    )


def run_evaluate(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    now: Callable[[], datetime] | None = None,
) -> int:
    """Handler of ``evaluate``: per field, train on a split and score the held-out rows.

    With ``--model`` the stored model is scored on every labelled row instead. ``--json``
    prints ``{"run": ..., "fields": ...}`` (see ``triage.learn.evaluate_cmd``); ``now`` is the
    clock the run record's timestamps come from.
    """
    from triage.learn.evaluate_cmd import evaluate_and_report
    from triage.learn.run_record import utc_now

    clock = now or utc_now
    started = clock()
    data = _csv_data(args)
    return evaluate_and_report(
        args,
        data,
        parents=_parents(args, list(data.labels)),
        config=_train_config(args),
        text_columns=_text_columns(args),
        label_columns=_label_specs(args.label),
        started=started,
        clock=clock,
        out=out or sys.stdout,
    )


def _text_columns(args: argparse.Namespace) -> list[str]:
    return [c.strip() for c in args.text.split(",") if c.strip()]
