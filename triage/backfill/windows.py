"""Plan a backfill run's time windows and build each window's platform query.

A run covers ``[since, until)`` of one time field (created by default, or updated). It is cut
into windows ``[start, end)`` that touch without gaps or overlaps, each sized to
``target_tickets`` at the estimated rate (a few minutes of work), so the queue fans them out
and a checkpoint per window is small.

A window's query selects only tickets that still need something: any field the mapping fills
(mode ``fill``) holding an ``unset`` value or nothing. Fields in ``suggest`` mode never get a
value, so they would select the same tickets on every run and are left out. The admin's own
query (ServiceNow encoded query) or ``$filter`` (Dataverse) is ANDed in. Records come in the
stable order (time, id); after a checkpoint ``(ts, last_id)`` the query continues with
``t >= ts and (t > ts or id > last_id)``, so a resumed window neither repeats nor skips a
ticket. Timestamps are UTC, whole seconds (the platforms' own precision).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.errors import ConfigError
from domain.mapping import FieldMapping

__all__ = [
    "DEFAULT_TARGET_TICKETS",
    "TIME_FIELDS",
    "Position",
    "Window",
    "parse_time",
    "plan_windows",
    "position_of",
    "time_field",
    "window_order",
    "window_query",
]

#: Per platform: the created and updated time columns a run can be windowed by.
TIME_FIELDS: dict[str, dict[str, str]] = {
    "servicenow": {"created": "sys_created_on", "updated": "sys_updated_on"},
    "dataverse": {"created": "createdon", "updated": "modifiedon"},
}
DEFAULT_TARGET_TICKETS = 500
DEFAULT_SPAN = timedelta(days=1)  # without an estimate
MIN_SPAN = timedelta(minutes=1)
MAX_SPAN = timedelta(days=31)
MAX_WINDOWS = 10_000

_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_SN_FORBIDDEN = re.compile(r"\^NQ|ORDERBY|\^EQ|[\r\n]")


@dataclass(frozen=True)
class Window:
    """One slice ``[start, end)`` of a run, by the platform time column ``field``."""

    run_id: str
    index: int
    start: datetime
    end: datetime
    field: str = "sys_created_on"

    @property
    def key(self) -> str:
        """The window's row key in the checkpoint store (sorts in index order)."""
        return f"w{self.index:06d}"


@dataclass(frozen=True, order=True)
class Position:
    """Where a window's reading stands: the last record's (time, id) in the stable order."""

    time: datetime
    record_id: str


def time_field(platform: str, by: str = "created") -> str:
    """The platform's time column for ``by`` (``created`` or ``updated``)."""
    try:
        return TIME_FIELDS[platform][by]
    except KeyError:
        raise ConfigError(f"no time field {by!r} for platform {platform!r}") from None


def plan_windows(
    since: datetime,
    until: datetime,
    *,
    run_id: str = "",
    field: str = "sys_created_on",
    estimated_per_day: float | None = None,
    target_tickets: int = DEFAULT_TARGET_TICKETS,
    max_windows: int = MAX_WINDOWS,
) -> list[Window]:
    """Cut ``[since, until)`` into contiguous windows of about ``target_tickets`` each.

    ``since`` is floored and ``until`` ceiled to whole seconds (UTC); both must carry a
    timezone. Without ``estimated_per_day`` a window spans one day; with it, the span is
    ``target_tickets / estimated_per_day`` days, kept within 1 minute .. 31 days and widened
    when the run would need more than ``max_windows`` windows. The last window ends at
    ``until`` exactly.
    """
    start, end = _utc(since, "since"), _utc(until, "until")
    start = start.replace(microsecond=0)
    if end.microsecond:
        end = end.replace(microsecond=0) + timedelta(seconds=1)
    if end <= start:
        raise ConfigError("until must be after since")
    if target_tickets < 1 or max_windows < 1:
        raise ConfigError("target_tickets and max_windows must be at least 1")
    if estimated_per_day is None:
        span = DEFAULT_SPAN
    elif estimated_per_day <= 0 or not math.isfinite(estimated_per_day):
        raise ConfigError("estimated_per_day must be a positive number")
    else:
        span = timedelta(days=target_tickets / estimated_per_day)
        span = min(max(span, MIN_SPAN), MAX_SPAN)
    seconds = max(1, round(span.total_seconds()))
    total = int((end - start).total_seconds())
    if math.ceil(total / seconds) > max_windows:
        seconds = math.ceil(total / max_windows)
    windows: list[Window] = []
    index, cursor = 0, start
    while cursor < end:
        upper = min(cursor + timedelta(seconds=seconds), end)
        windows.append(Window(run_id, index, cursor, upper, field))
        index, cursor = index + 1, upper
    return windows


def window_query(
    window: Window,
    platform: str,
    mapping: FieldMapping,
    extra: str | None = None,
    *,
    after: Position | None = None,
    exclude_user: str | None = None,
) -> str:
    """The platform query for one window, resuming after ``after`` when given.

    ServiceNow: a complete encoded query with ``ORDERBY<time>^ORDERBYsys_id``. Dataverse: the
    ``$filter`` (the order is ``window_order``). ``extra`` is the admin's query or filter.
    ``exclude_user`` (our integration user) leaves out tickets whose last update is ours: we
    have been there, and a person's later edit brings the ticket back.
    Raises ``ConfigError`` for a query that could escape the AND (``^NQ``, unbalanced
    parentheses), an order of its own, or a mapping that fills no field.
    """
    _check_field(window, platform)
    if mapping.system != platform:
        raise ConfigError(f"the mapping is for {mapping.system}, not {platform}")
    columns = _filled_columns(mapping)
    if platform == "servicenow":
        query = _servicenow(window, mapping, columns, extra, after)
        if exclude_user:
            if not re.fullmatch(r"[\w.@-]{1,100}", exclude_user):
                raise ConfigError("the integration user name holds characters a query cannot")
            # Before the ORDERBY terms, which must stay last.
            head, order = query.split("^ORDERBY", 1)
            query = f"{head}^{mapping.last_updated_by}!={exclude_user}^ORDERBY{order}"
        return query
    query = _dataverse(window, mapping, columns, extra, after)
    if exclude_user and _GUID.fullmatch(exclude_user):
        # (A name instead of WhoAmI's id cannot be filtered on; the loop guard skips them.)
        query += f" and {mapping.last_updated_by} ne {exclude_user.lower()}"
    return query


def window_order(window: Window, platform: str, mapping: FieldMapping) -> str:
    """The stable order of a window's records: time, then the record id, ascending."""
    _check_field(window, platform)
    if platform == "servicenow":
        return f"ORDERBY{window.field}^ORDERBYsys_id"
    return f"{window.field} asc,{mapping.table}id asc"


def parse_time(raw: object) -> datetime:
    """A platform timestamp (ServiceNow ``2024-01-02 03:04:05``, Dataverse ``…T…Z``) in UTC."""
    if isinstance(raw, datetime):
        return _utc(raw, "time")
    try:
        value = datetime.fromisoformat(str(raw).strip())
    except ValueError:
        raise ConfigError("record time is not an ISO timestamp") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def position_of(window: Window, record_id: str, fields: Mapping[str, Any]) -> Position:
    """The position of a record read in ``window`` (its time column and id)."""
    return Position(parse_time(fields.get(window.field)), record_id)


# ---- ServiceNow ---------------------------------------------------------------------------


def _servicenow(
    window: Window,
    mapping: FieldMapping,
    columns: list[tuple[str, str]],
    extra: str | None,
    after: Position | None,
) -> str:
    t = window.field
    terms: list[str] = []
    if extra and extra.strip().strip("^"):
        query = extra.strip().strip("^")
        if _SN_FORBIDDEN.search(query):
            raise ConfigError("the query must not contain ^NQ, ^EQ, ORDERBY or line breaks")
        terms.append(query)
    if after is None:
        terms.append(f"{t}>={_sn_time(window.start)}")
    else:
        if not _SYS_ID.fullmatch(after.record_id):
            raise ConfigError("checkpoint id is not a sys_id")
        ts = _sn_time(after.time)
        terms += [f"{t}>={ts}", f"{t}>{ts}^ORsys_id>{after.record_id}"]
    terms.append(f"{t}<{_sn_time(window.end)}")
    unset: list[str] = []
    for canonical, column in columns:
        for value in mapping.unset.get(canonical, []):
            if "^" in value or "\n" in value:
                raise ConfigError(f"unset.{canonical}: a value holds '^' or a line break")
            unset.append(f"{column}={value}")
        unset.append(f"{column}ISEMPTY")
    terms.append("^OR".join(unset))
    terms.append(window_order(window, "servicenow", mapping))
    return "^".join(terms)


def _sn_time(value: datetime) -> str:
    return _utc(value, "time").strftime("%Y-%m-%d %H:%M:%S")


# ---- Dataverse ----------------------------------------------------------------------------


def _dataverse(
    window: Window,
    mapping: FieldMapping,
    columns: list[tuple[str, str]],
    extra: str | None,
    after: Position | None,
) -> str:
    t, key = window.field, f"{mapping.table}id"
    terms: list[str] = []
    if extra and extra.strip():
        _check_filter(extra.strip())
        terms.append(f"({extra.strip()})")
    if after is None:
        terms.append(f"{t} ge {_dv_time(window.start)}")
    else:
        if not _GUID.fullmatch(after.record_id):
            raise ConfigError("checkpoint id is not a GUID")
        ts = _dv_time(after.time)
        terms += [f"{t} ge {ts}", f"({t} gt {ts} or {key} gt {after.record_id.lower()})"]
    terms.append(f"{t} lt {_dv_time(window.end)}")
    types = mapping.column_types()
    unset: list[str] = []
    for canonical, column in columns:
        kind = types.get(column, "text")
        for value in mapping.unset.get(canonical, []):
            unset.append(f"{column} eq {_dv_literal(canonical, kind, value)}")
        unset.append(f"{column} eq null")
        if kind == "text":
            unset.append(f"{column} eq ''")
    terms.append(f"({' or '.join(unset)})")
    return " and ".join(terms)


def _dv_literal(canonical: str, kind: str, value: str) -> str:
    if kind == "choice":
        if not re.fullmatch(r"-?\d+", value.strip()):
            raise ConfigError(f"unset.{canonical}: a choice value must be an integer")
        return value.strip()
    if kind.startswith("lookup:"):
        if not _GUID.fullmatch(value.strip()):
            raise ConfigError(f"unset.{canonical}: a lookup value must be a GUID")
        return value.strip().lower()
    return "'" + value.replace("'", "''") + "'"


def _dv_time(value: datetime) -> str:
    return _utc(value, "time").strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_filter(text: str) -> None:
    """Refuse a $filter whose parentheses could close ours (quotes respected)."""
    if re.search(r"[\x00-\x1f]", text):
        raise ConfigError("the filter must not contain control characters")
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted  # '' inside a string toggles twice: still quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                break
    if depth != 0 or quoted:
        raise ConfigError("the filter has unbalanced parentheses or quotes")


# ---- shared -------------------------------------------------------------------------------


def _filled_columns(mapping: FieldMapping) -> list[tuple[str, str]]:
    columns: list[tuple[str, str]] = []
    seen: set[str] = set()
    for canonical, column in mapping.fields.items():
        if mapping.writes(canonical) and mapping.mode(canonical) == "fill" and column not in seen:
            seen.add(column)
            columns.append((canonical, column))
    if not columns:
        raise ConfigError("the mapping fills no field: a backfill would select nothing")
    return columns


def _check_field(window: Window, platform: str) -> None:
    if window.field not in TIME_FIELDS.get(platform, {}).values():
        raise ConfigError(f"{window.field!r} is not a time field of {platform!r}")


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ConfigError(f"{name} needs a timezone")
    return value.astimezone(UTC)
