"""``python -m triage``: enrich a file of tickets, train and evaluate models, run backfills."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from domain.errors import ConfigError, EnrichmentError
from domain.models import Ticket

if TYPE_CHECKING:
    from domain.mapping import FieldMapping

__all__ = ["main", "read_tickets"]

_TITLE_COLUMNS = ("short_description", "title", "subject")
_BODY_COLUMNS = ("description", "body", "text")
_TABLE_FIELDS = ("category", "subcategory", "impact", "urgency", "priority")
#: ``enrich --platform`` → the system its mapping must be for.
_PLATFORM_SYSTEMS = {"servicenow": "servicenow", "dynamics": "dataverse"}
_NOT_WRITTEN = {
    "servicenow": "below the field's threshold, or not written back"
    " (priority: ServiceNow computes it from impact and urgency)",
    "dataverse": "below the field's threshold, or the mapping names no column for it"
    " (impact and urgency: a Case has none out of the box)",
}


def read_tickets(path: Path, mapping: FieldMapping | None = None) -> Iterator[Ticket]:
    """Read tickets from CSV or JSONL (by suffix), picking title and description columns.

    With a Dataverse mapping the file is a Dynamics export: its columns are the mapping's
    (logical names such as ``title``, ``description``, ``prioritycode``, ``_subjectid_value``,
    ``ticketnumber``) holding raw values (option-set ints, subject GUIDs), read as the pipeline
    reads a case: mapped raw values count as set, unset ones (Normal priority) do not.
    """
    if mapping is not None and mapping.system == "dataverse":
        yield from _read_export(path, mapping)
        return
    rows = _rows(path, (*_TITLE_COLUMNS, *_BODY_COLUMNS))
    for number, row in enumerate(rows, start=1):
        title = _first(row, _TITLE_COLUMNS)
        # What the file already holds counts as set (the summary lands in the title field).
        current: dict[str, str | None] = {f: _first(row, (f,)) or None for f in _TABLE_FIELDS}
        current["summary"] = title or None
        yield Ticket(
            record_id=str(number),
            title=title,
            description=_first(row, _BODY_COLUMNS),
            current=current,
        )


def _read_export(path: Path, mapping: FieldMapping) -> Iterator[Ticket]:
    from domain.mapping import to_ticket

    text_columns = (mapping.fields["title"], mapping.fields["description"])
    for number, row in enumerate(_rows(path, text_columns), start=1):
        yield to_ticket(_lowered(row), mapping, record_id=str(number))


def _rows(path: Path, text_columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return _read_jsonl(path)
    return _read_csv(path, text_columns)


def _lowered(row: dict[str, Any]) -> dict[str, Any]:
    return {str(k).strip().lower().lstrip("\ufeff"): v for k, v in row.items()}


def _first(row: dict[str, Any], names: Sequence[str]) -> str:
    lowered = _lowered(row)
    for name in names:
        value = lowered.get(name)
        if value:
            return str(value)
    return ""


def _read_csv(path: Path, text_columns: Sequence[str]) -> Iterator[dict[str, Any]]:
    csv.field_size_limit(10_000_000)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = {f.strip().lower() for f in reader.fieldnames or []}
        if not header & set(text_columns):
            wanted = ", ".join(text_columns)
            raise ConfigError(f"{path}: no text column found (expected one of: {wanted})")
        yield from reader


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{line_no}: each line must be a JSON object")
            yield row


def _cmd_enrich(args: argparse.Namespace) -> int:
    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping
    from enrichers import default_enrichers
    from triage.model_store import load_model
    from triage.preview import explain_ticket

    path = args.mapping
    if path is None and args.platform == "dynamics":
        path = DYNAMICS_DEFAULT_MAPPING_PATH
    mapping = load_mapping(path)
    wanted = _PLATFORM_SYSTEMS.get(args.platform)
    if wanted is not None and mapping.system != wanted:
        raise ConfigError(
            f"--platform {args.platform} needs a mapping with system: {wanted} "
            f"(the mapping's is {mapping.system})"
        )
    model = load_model(args.model) if args.model else None
    if model is not None:
        from triage.model_fit import check_model_fits

        check_model_fits(model, mapping)  # refuse labels the mapping cannot write, by name
    enrichers = default_enrichers(mapping, model=model)
    out: TextIO = sys.stdout
    rows: list[tuple[Ticket, dict[str, dict[str, Any]]]] = []
    for ticket in read_tickets(Path(args.file), mapping):
        fields = explain_ticket(ticket, enrichers, mapping)
        if args.format == "jsonl":
            row = {"row": int(ticket.record_id), **fields}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            rows.append((ticket, fields))
    if args.format == "table":
        _print_table(rows, out, mapping.system)
    return 0


def _print_table(
    rows: list[tuple[Ticket, dict[str, dict[str, Any]]]], out: TextIO, system: str
) -> None:
    header = ["row", *_TABLE_FIELDS, "summary"]
    lines = [header]
    for ticket, fields in rows:
        cells = [ticket.record_id]
        for field in _TABLE_FIELDS:
            f = fields[field]
            mark = "" if f["would_write"] else "?"
            cells.append("-" if f["value"] is None else f"{f['value']}{mark} {f['confidence']:.2f}")
        summary = fields["summary"]
        mark = "" if summary["would_write"] else "? "
        cells.append("-" if summary["value"] is None else f"{mark}{summary['value'][:70]}")
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header) - 1)]
    for cells in lines:
        head = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True))
        out.write(f"{head}  {cells[-1]}\n")
    out.write(
        f"\n'?' after a value (before the summary) = would not be written: already set, "
        f"{_NOT_WRITTEN[system]}. '-' = no suggestion (--format jsonl says why).\n"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="python -m triage", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    enrich = sub.add_parser("enrich", help="enrich tickets from a CSV or JSONL file")
    enrich.add_argument("file", help="CSV or JSONL with short_description/title and description")
    enrich.add_argument("--format", choices=["table", "jsonl"], default="table")
    enrich.add_argument(
        "--platform",
        choices=sorted(_PLATFORM_SYSTEMS),
        help="the file's platform; dynamics: a Dataverse export (columns title, description, "
        "prioritycode, _subjectid_value, ticketnumber) with the embedded Dynamics mapping",
    )
    enrich.add_argument("--mapping", help="admin mapping file (default: the embedded one)")
    enrich.add_argument("--model", help="model directory or blob URL (default: rules only)")
    enrich.set_defaults(handler=_cmd_enrich)
    from triage.dynamics_admin_cli import add_dynamics_parser

    add_dynamics_parser(sub)  # python -m triage dynamics register-webhook | rotate-key
    from triage.mappings_cli import add_mappings_parser

    add_mappings_parser(sub)  # python -m triage mappings pull | validate | schema
    from triage.backfill.cli import add_backfill_parser

    add_backfill_parser(sub)  # python -m triage backfill ... | backfill status RUN
    try:
        from triage.learn.cli import add_evaluate_parser, add_train_parser
    except ImportError:  # pragma: no cover - the learner ships with the package
        return parser
    add_train_parser(sub)
    add_evaluate_parser(sub)
    from triage.learn.improvement_cli import add_report_parser

    add_report_parser(sub)  # python -m triage report --since DATE [--html FILE]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; errors print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        code: int = args.handler(args)
    except EnrichmentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code
