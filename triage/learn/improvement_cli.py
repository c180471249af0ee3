"""``python -m triage report --since DATE``: the improvement report from the command line.

Reads the shadow records of the window (Table Storage ``enrichshadow`` through
``AzureWebJobsStorage``, or ``--shadow-file`` JSONL), re-reads the tickets' final values
through the platform connector (closed ones only, batched), and prints one JSON object
(``--json``) or a short summary; ``--html FILE`` writes the page (``improvement_html``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from connectors.shadow import MemoryShadowStore, ShadowRecord, ShadowStore
from domain.errors import ConfigError
from triage.learn.improvement import (
    DEFAULT_TARGET,
    FinalSource,
    build_report,
    latest_suggestions,
    read_finals,
)

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from domain.settings import Settings

__all__ = [
    "ReportSources",
    "add_report_parser",
    "parse_when",
    "read_shadow_file",
    "run_report",
]

#: ``--platform`` → the mapping ``system`` it needs.
_SYSTEMS = {"servicenow": "servicenow", "dynamics": "dataverse"}
#: Builds (connector, settings) for a platform name; tests pass their own.
ReportSources = Callable[[str], "tuple[FinalSource, Settings]"]


def parse_when(text: str, option: str) -> datetime:
    """``2026-11-01`` or an ISO date-time; without a zone it is UTC. ``ConfigError`` else."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option}: expected a date such as 2026-11-01") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_shadow_file(path: str | Path) -> MemoryShadowStore:
    """Shadow records from a JSONL file (one ``ShadowRecord`` object a line)."""
    names = {f.name for f in dataclass_fields(ShadowRecord)}
    store = MemoryShadowStore()
    rows = []
    try:
        with Path(path).open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    rows.append(ShadowRecord(**{k: item[k] for k in names}))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    kind = type(exc).__name__
                    raise ConfigError(
                        f"{Path(path).name}:{line_no}: not a shadow record ({kind})"
                    ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {Path(path).name}: {exc.strerror}") from exc
    store.record(rows)
    return store


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="shadow-mode suggestions vs the values people set on closed tickets",
    )
    parser.add_argument("--since", required=True, help="first day (UTC) or ISO date-time")
    parser.add_argument("--until", help="end (exclusive; default: now)")
    parser.add_argument("--platform", choices=sorted(_SYSTEMS), default="servicenow")
    parser.add_argument(
        "--mapping", help="admin mapping (default: ENRICH_MAPPING_PATH / ENRICH_DATAVERSE_…)"
    )
    parser.add_argument("--shadow-file", help="shadow records as JSONL instead of Table Storage")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="P|FIELD=P",
        help=f"precision a class must reach (default {DEFAULT_TARGET}); repeat per field",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--html", help="write the HTML report here")
    parser.set_defaults(handler=run_report)
    return parser


def _targets(specs: list[str]) -> tuple[float, dict[str, float]]:
    default, per_field = DEFAULT_TARGET, {}
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--target {spec[:40]!r}: expected P or FIELD=P") from None
        if not 0.0 < number <= 1.0:
            raise ConfigError("--target must be within 0..1")
        if sep:
            per_field[name.strip()] = number
        else:
            default = number
    return default, per_field


def _default_sources(platform: str) -> tuple[FinalSource, Settings]:
    from domain.settings import load_settings

    settings = load_settings()
    if platform == "dynamics":
        from connectors.dataverse import build_dataverse_connector

        return build_dataverse_connector(settings, field_types={}), settings
    from connectors.servicenow import build_servicenow_connector

    return build_servicenow_connector(settings), settings


def _mapping(args: argparse.Namespace, settings: Settings) -> FieldMapping:
    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping

    if args.platform == "dynamics":
        path = args.mapping or settings.dataverse_mapping_path or DYNAMICS_DEFAULT_MAPPING_PATH
    else:
        path = args.mapping or settings.mapping_path
    mapping = load_mapping(path)
    if mapping.system != _SYSTEMS[args.platform]:
        raise ConfigError(
            f"--platform {args.platform} needs a mapping with system: "
            f"{_SYSTEMS[args.platform]} (the mapping's is {mapping.system})"
        )
    return mapping


def _store(args: argparse.Namespace, settings: Settings | None) -> ShadowStore:
    if args.shadow_file:
        return read_shadow_file(args.shadow_file)
    from connectors.shadow import TableShadowStore
    from domain.settings import QueueSettings

    queue = settings.queue if settings is not None else QueueSettings()

    return TableShadowStore.from_settings(os.environ, queue.connection_setting)


def run_report(
    args: argparse.Namespace,
    *,
    sources: ReportSources | None = None,
    store: ShadowStore | None = None,
    out: TextIO | None = None,
    now: Callable[[], datetime] | None = None,
) -> int:
    """Handler of ``report``; ``sources``, ``store`` and ``now`` replace the defaults in tests."""
    stream = out or sys.stdout
    since = parse_when(args.since, "--since")
    until = parse_when(args.until, "--until") if args.until else (now or _utc_now)()
    if until <= since:
        raise ConfigError("--until must be after --since")
    default_target, targets = _targets(args.target)
    # A shadow file is read first: a bad one fails before any platform is contacted.
    shadow = store if store is not None or not args.shadow_file else _store(args, None)
    connector, settings = (sources or _default_sources)(args.platform)
    mapping = _mapping(args, settings)
    shadow = shadow if shadow is not None else _store(args, settings)
    records = list(shadow.since(since.timestamp()))
    wanted = latest_suggestions(records, mapping, until=until.timestamp())
    finals = read_finals(connector, mapping, wanted)
    report = build_report(
        records,
        finals,
        mapping,
        targets=targets,
        default_target=default_target,
        until=until.timestamp(),
    )
    report["window"] = {"since": _iso(since), "until": _iso(until)}
    if args.html:
        from triage.learn.improvement_html import write_improvement_html

        title = f"Improvement report: {mapping.system} {mapping.table}"
        write_improvement_html(report, Path(args.html), title=title)
    if args.json:
        stream.write(json.dumps(report, ensure_ascii=False) + "\n")
        return 0
    for line in _summary_lines(report):
        stream.write(line + "\n")
    return 0


def _summary_lines(report: dict[str, Any]) -> Iterator[str]:
    t = report["tickets"]
    yield (
        f"{t['with_suggestions']} tickets with suggestions, {t['closed']} closed and scored, "
        f"{t['not_closed']} not closed yet (skipped)"
    )
    for name, f in report["fields"].items():
        flag = " BELOW TARGET" if f["below_target"] else ""
        below = f["classes_below_target"]
        classes = f"; classes below target: {', '.join(below)}" if below else ""
        yield (
            f"{name}: agreement {_pct(f['agreement'])}, coverage {_pct(f['coverage'])} and "
            f"precision {_pct(f['precision'])} at {f['threshold']:.2f}{flag}{classes}"
        )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _utc_now() -> datetime:
    return datetime.now(UTC)
