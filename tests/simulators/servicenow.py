"""A loopback HTTP simulator of the ServiceNow Table API (docs/servicenow.md §1-6, §8-10, §14).

Every response carries ``X-Transaction-ID`` (12 hex chars, as real instances send) so callers
can put a request id in their errors. Deliberate simplifications: the user's time zone is UTC,
journal fields read back as "" in every display mode.

Queries (``sysparm_query``, see encoded_query): what the connector may send is implemented,
including dot-walking through reference fields (``caller_id.user_name=x``, ``ORDERBY`` too);
everything else (``JOIN``, ``RLQUERY``, a dot-walk through a non-reference field, ...) is refused
with 400 rather than silently matching every row. A condition on an unknown plain field name is
ignored, as the platform documents, or selects nothing with ``invalid_query_returns_no_rows``.

Writes to ``incident`` are audited in ``sys_audit`` like the platform does (one row per changed
field, journal entries included); ``update_record``, ``before_write`` and the staged write faults
(``commit_then_delay``, ``commit_then_drop``, ``delay_then_commit``) let tests stage a person's
edit and the races of a timed-out PATCH.

Helpers: servicenow_schema (tables, reference fields, dot-walking), servicenow_auth (basic,
OAuth client credentials, rate limit rules), servicenow_batch (``POST /api/now/v1/batch``),
write_faults (the staged write faults).
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tests.simulators import Clock, FakeClock, LoopbackServer, Request, Response, SystemClock
from tests.simulators.encoded_query import UnsupportedQueryError, parse
from tests.simulators.servicenow_auth import InstanceAuth, RateLimitMode, RateLimitRule
from tests.simulators.servicenow_batch import BATCH_PATH, BatchEndpoint
from tests.simulators.servicenow_schema import (
    AUDITED_TABLES,
    AUTO_FIELDS,
    DEFAULT_PRIORITY_MATRIX,
    DEFAULTS,
    DEPENDS_ON,
    JOURNAL_FIELDS,
    OOB_CHOICES,
    OOB_SUBCATEGORIES,
    SYS_FIELDS,
    TABLE_FIELDS,
    TableSchema,
)
from tests.simulators.write_faults import WriteFaults

__all__ = [
    "DEFAULT_PRIORITY_MATRIX",
    "JOURNAL_FIELDS",
    "TABLE_FIELDS",
    "TRANSACTION_CANCELLED",
    "BeforeWrite",
    "FakeClock",
    "LoggedRequest",
    "RateLimitMode",
    "RateLimitRule",
    "ServiceNowSimulator",
]

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10_000
TRANSACTION_CANCELLED = "Transaction cancelled: maximum execution time exceeded"
_NOT_FOUND = ("No Record found", "Record doesn't exist or ACL restricts the record retrieval")
_BAD_JSON = ("Exception while reading request", "The payload is not valid JSON.")

WriteCallback = Callable[[str, dict[str, str], str, str], None]  # table, record, op, user
BeforeWrite = Callable[[str, str, dict[str, Any]], None]  # table, sys_id, parsed body


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the simulator saw it; status 0 means the connection was dropped."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    status: int
    body: Any = None


def _error(status: int, message: str, detail: str | None) -> Response:
    return Response(status, {"error": {"message": message, "detail": detail}, "status": "failure"})


def _as_text(value: Any) -> str:
    """Coerce a JSON input value the way the Table API stores it (everything is a string)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and "value" in value:
        return _as_text(value["value"])
    return value if isinstance(value, str) else json.dumps(value)


def _wanted(query: Mapping[str, str]) -> list[str]:
    return [f.strip() for f in query.get("sysparm_fields", "").split(",") if f.strip()]


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "").lower() == "true"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


class ServiceNowSimulator(LoopbackServer):
    """In-memory ServiceNow instance served over HTTP on 127.0.0.1 (ephemeral port).

    ``invalid_query_returns_no_rows`` models the ``glide.invalid_query.returns_no_rows`` system
    property (false by default): true makes a query with a condition on an unknown field name
    return no rows instead of ignoring that condition. ``audit_inserts`` models
    ``glide.sys.audit_inserts`` (false by default: "the system does not create Audit records for
    inserts", platform docs "Tracking inserts"); updates are always audited.
    """

    server_header = "ServiceNow"

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        oauth_clients: Mapping[str, tuple[str, str]] | None = None,
        clock: Clock | None = None,
        *,
        token_ttl_s: int = 1800,
        priority_matrix: Mapping[tuple[str, str], str] | None = None,
        extra_fields: Mapping[str, Iterable[str]] | None = None,
        default_choices: bool = True,
        invalid_query_returns_no_rows: bool = False,
        audit_inserts: bool = False,
    ) -> None:
        super().__init__()
        self.invalid_query_returns_no_rows = invalid_query_returns_no_rows
        self.audit_inserts = audit_inserts
        self.clock: Clock = clock or SystemClock()
        self._auth = InstanceAuth(
            users if users is not None else {"admin": "admin"},
            oauth_clients or {},
            self.clock,
            token_ttl_s,
        )
        self.priority_matrix = dict(priority_matrix or DEFAULT_PRIORITY_MATRIX)
        self._fields = {t: list(f) for t, f in TABLE_FIELDS.items()}
        for table, extra in (extra_fields or {}).items():
            self._fields.setdefault(table, list(SYS_FIELDS)).extend(extra)
        self._lock = threading.RLock()
        self._tables: dict[str, dict[str, dict[str, str]]] = {t: {} for t in self._fields}
        self._numbers = itertools.count(10001)
        self._faults: list[Response] = []
        self._callbacks: list[WriteCallback] = []
        self._log: list[LoggedRequest] = []
        self._before_write: BeforeWrite | None = None
        self._write_faults = WriteFaults()
        self._audit_seq = itertools.count(1)
        self.batch = BatchEndpoint(self)  # POST /api/now/v1/batch; .max_serviced, .cut_next
        if default_choices:
            self._seed_choices()

    # ---- configuration and fault injection -------------------------------------------------

    @property
    def token_ttl_s(self) -> int:
        """Lifetime of OAuth access tokens issued from now on (``expires_in`` + 1)."""
        return self._auth.token_ttl_s

    @token_ttl_s.setter
    def token_ttl_s(self, seconds: int) -> None:
        self._auth.token_ttl_s = seconds

    def set_rate_limit(self, rule: RateLimitRule | None) -> None:
        """Install (or remove with None) the rate limit rule; counters restart."""
        self._auth.set_rate_limit(rule)

    def fail_next(
        self, count: int, status: int = 503, message: str = "Service Unavailable",
        detail: str = "", *, html: bool = False,
    ) -> None:  # fmt: skip
        """Answer the next ``count`` requests with ``status`` (JSON error, or an HTML page)."""
        page = f"<html><body><h1>{status} {message}</h1></body></html>"
        with self._lock:
            for _ in range(count):
                fault = Response(status, page) if html else _error(status, message, detail)
                self._faults.append(fault)

    def reset_faults(self) -> None:
        """Clear pending 5xx responses, staged write faults, connection drops and latency."""
        super().reset_faults()
        self._write_faults.clear()
        with self._lock:
            self._faults.clear()

    def commit_then_delay(self, count: int, delay_s: float) -> None:
        """The next ``count`` writes commit at once, but their answer is held ``delay_s``.

        A client whose read timeout is shorter sees a ReadTimeout although the write landed.
        """
        self._write_faults.stage("commit_then_delay", count, delay_s)

    def commit_then_drop(self, count: int = 1) -> None:
        """The next ``count`` writes commit, then the connection is closed without an answer."""
        self._write_faults.stage("commit_then_drop", count)

    def delay_then_commit(self, count: int, delay_s: float) -> None:
        """The next ``count`` writes are held ``delay_s`` seconds, then committed and answered.

        The client has long timed out; a redelivered job may re-read the record before the
        commit lands. ``wait_idle`` waits for the commit.
        """
        self._write_faults.stage("delay_then_commit", count, delay_s)

    def refuse_writes(self, count: int, status: int = 503) -> None:
        """The next ``count`` writes are answered ``status`` (a 5xx) and not applied."""
        self._write_faults.stage("refuse", count, status=status)

    def drop_writes(self, count: int = 1) -> None:
        """The next ``count`` writes are not applied; the connection closes without an answer."""
        self._write_faults.stage("drop_uncommitted", count)

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every write caught by a staged write fault has committed and answered.

        Returns False if ``timeout_s`` passed first. Writes staged but not yet arrived do not
        count. ``stop`` cuts every hold short, so a stopped simulator is idle at once.
        """
        return self._write_faults.wait_idle(timeout_s)

    def before_write(self, callback: BeforeWrite | None) -> None:
        """Call ``callback(table, sys_id, body)`` when a PATCH/PUT for an existing record arrives.

        It runs after authentication and rate limiting, before the write is applied (and
        before any ``delay_then_commit`` hold), in the request's thread and outside the
        simulator lock, so it may call ``update_record`` to stage a person's edit between a
        client's read and its PATCH. None removes it.
        """
        with self._lock:
            self._before_write = callback

    def expire_tokens(self) -> None:
        """Invalidate every issued OAuth access token now (next use answers 401)."""
        self._auth.expire_tokens()

    def on_write(self, callback: WriteCallback) -> None:
        """Call ``callback(table, record, "insert"|"update", user)`` after each HTTP write."""
        self._callbacks.append(callback)

    # ---- introspection and seeding ---------------------------------------------------------

    def add_record(
        self, table: str, fields: Mapping[str, Any] | None = None, user: str = "admin"
    ) -> str:
        """Insert without HTTP or callbacks; given fields win over defaults. Returns sys_id."""
        values = dict(fields or {})
        unknown = set(values) - set(self._fields[table])
        if unknown:
            raise ValueError(f"unknown fields for {table}: {sorted(unknown)}")
        with self._lock:
            rec = self._new_record(table, user)
            notes = [(k, _as_text(values.pop(k))) for k in JOURNAL_FIELDS if k in values]
            rec.update({k: _as_text(v) for k, v in values.items()})
            if "priority" not in values:
                self._derive(table, rec)
            self._tables[table][rec["sys_id"]] = rec
            self._add_journal(table, rec["sys_id"], notes, user)
            self._audit_insert(table, rec, notes, user)
            return rec["sys_id"]

    def update_record(
        self, table: str, sys_id: str, fields: Mapping[str, Any], user: str = "anna.b"
    ) -> dict[str, str]:
        """Update as an HTTP PATCH by ``user`` would, without HTTP; returns the stored record.

        Merges the fields, derives priority, bumps sys_mod_count / sys_updated_*, appends
        journal entries, writes sys_audit and fires ``on_write`` callbacks (when something
        changed). Unlike HTTP, an unknown field raises ValueError and a missing record KeyError.
        """
        unknown = set(fields) - set(self._fields[table])
        if unknown:
            raise ValueError(f"unknown fields for {table}: {sorted(unknown)}")
        with self._lock:
            rec = self._tables[table].get(sys_id)
            if rec is None:
                raise KeyError(f"no {table} record {sys_id}")
            changed = self._update(table, rec, fields, user)
            snapshot = dict(rec)
        if changed:
            try:
                self._fire(table, snapshot, "update", user)
            except Exception as exc:  # as over HTTP: a failing business rule fails nothing
                log.exception("on_write callback failed for update_record")
                self.errors.append(exc)
        return dict(snapshot)

    def get_record(self, table: str, sys_id: str) -> dict[str, str] | None:
        """A copy of the stored (raw) record, or None."""
        with self._lock:
            rec = self._tables[table].get(sys_id)
            return dict(rec) if rec is not None else None

    def records(self, table: str) -> list[dict[str, str]]:
        """Copies of all raw records of ``table`` in insertion order."""
        with self._lock:
            return [dict(r) for r in self._tables[table].values()]

    def journal(self, sys_id: str, element: str | None = None) -> list[dict[str, str]]:
        """Journal rows (oldest first) for a record, optionally for one element."""
        return [
            row for row in self.records("sys_journal_field")
            if row["element_id"] == sys_id and element in (None, row["element"])
        ]  # fmt: skip

    def audit(self, sys_id: str, fieldname: str | None = None) -> list[dict[str, str]]:
        """sys_audit rows (oldest first) of a record, optionally for one field."""
        return [
            row for row in self.records("sys_audit")
            if row["documentkey"] == sys_id and fieldname in (None, row["fieldname"])
        ]  # fmt: skip

    def invalid_choice_values(self, table: str = "incident") -> list[tuple[str, str, str]]:
        """(sys_id, field, value) of stored values missing from their (dependent) choice list."""
        with self._lock:
            rows = [r for r in self._tables["sys_choice"].values() if r["name"] == table]
            valid = {(r["element"], r["value"], r["dependent_value"]) for r in rows}
            bad = []
            for rec in self._tables[table].values():
                for name in sorted({r["element"] for r in rows}):
                    value, parent = rec.get(name, ""), rec.get(DEPENDS_ON.get(name, ""), "")
                    if value and not {(name, value, parent), (name, value, "")} & valid:
                        bad.append((rec["sys_id"], name, value))
            return bad

    @property
    def request_log(self) -> list[LoggedRequest]:
        """A copy of every request served so far."""
        with self._lock:
            return list(self._log)

    def set_choices(
        self, name: str, element: str, choices: Iterable[Mapping[str, str]] | Mapping[str, str]
    ) -> None:
        """Replace sys_choice rows of (name, element); a Mapping is read as value -> label."""
        rows = (
            [{"value": v, "label": lbl} for v, lbl in choices.items()]
            if isinstance(choices, Mapping)
            else list(choices)
        )
        with self._lock:
            table = self._tables["sys_choice"]
            for sys_id in [
                k for k, r in table.items() if (r["name"], r["element"]) == (name, element)
            ]:
                del table[sys_id]
            for seq, row in enumerate(rows):
                self.add_record(
                    "sys_choice", {"name": name, "element": element, "sequence": str(seq), **row}
                )

    def _seed_choices(self) -> None:
        for element, spec in OOB_CHOICES.items():
            self.set_choices("incident", element, dict(p.split("=") for p in spec.split(",")))
        rows = [
            {"value": v, "label": lbl, "dependent_value": cat}
            for cat, spec in OOB_SUBCATEGORIES.items()
            for v, lbl in (p.split("=") for p in spec.split(","))
        ]  # fmt: skip
        self.set_choices("incident", "subcategory", rows)

    # ---- request pipeline ------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        """Injected 5xx first, then the token endpoint or auth, rate limit and Table API."""
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        user, resp = (None, fault) if fault is not None else self._route(req)
        self._record(req, user, 0 if resp.drop else resp.status)
        resp.headers["X-Transaction-ID"] = secrets.token_hex(6)
        return resp

    def handle_dropped(self, req: Request) -> None:
        """Log a request whose connection was dropped on purpose (status 0)."""
        self._record(req, None, 0)

    def _record(self, req: Request, user: str | None, status: int) -> None:
        body = None
        if req.path.startswith("/api/") and req.body:  # never keep token-endpoint secrets
            try:
                body = json.loads(req.body)
            except ValueError:
                body = req.body.decode("utf-8", "replace")
        with self._lock:
            self._log.append(LoggedRequest(req.method, req.path, req.query, user, status, body))

    def _fire(self, table: str, record: dict[str, str], op: str, user: str) -> None:
        for callback in list(self._callbacks):
            callback(table, record, op, user)

    def _route(self, req: Request) -> tuple[str | None, Response]:
        parts = req.path.strip("/").split("/")
        if req.path == "/oauth_token.do" and req.method == "POST":
            return None, self._auth.issue_token(req)
        batch = req.path.rstrip("/") == BATCH_PATH  # only the versioned URL (servicenow.md §7)
        if parts[:2] == ["api", "now"] and len(parts) > 3 and parts[2][:1] == "v":
            del parts[2]  # /api/now/v2/table/... == /api/now/table/...
        if not batch and (parts[:3] != ["api", "now", "table"] or len(parts) not in (4, 5)):
            return None, _error(400, "Requested URI does not represent any resource", None)
        user = self._auth.authenticate(req.headers.get("authorization", ""))
        if user is None:
            resp = _error(401, "User is not authenticated", "Required to provide Auth information")
            resp.headers["WWW-Authenticate"] = 'BASIC realm="Service-now"'
            return None, resp
        if batch:  # sub-requests run as this user, each counted by the rate limit
            return user, self.batch.serve(req, user)
        blocked, limit_headers = self._auth.rate_limit(user, req.method, parts[3])
        if blocked:
            resp = _error(429, "Too Many Requests", "Rate limit exceeded")
        else:
            resp = self._table_op(req, user, parts[3], parts[4] if len(parts) == 5 else None)
        resp.headers.update(limit_headers)
        resp.headers["X-Is-Logged-In"] = "true"
        return user, resp

    def _table_op(self, req: Request, user: str, table: str, sys_id: str | None) -> Response:
        if table not in self._fields:
            return _error(400, f"Invalid table {table}", None)
        try:
            with self._lock:  # refuse before writing anything: the answer could not be shaped
                for name in _wanted(req.query):
                    self._schema(table).target(name)
        except UnsupportedQueryError as exc:
            return self._unsupported(exc)
        if sys_id is None and req.method in ("GET", "POST"):
            return self._list(req, table) if req.method == "GET" else self._write(req, user, table)
        if sys_id is not None and req.method in ("PATCH", "PUT"):
            return self._write(req, user, table, sys_id)
        if sys_id is not None and req.method in ("GET", "DELETE"):
            with self._lock:
                rec = self._tables[table].get(sys_id)
                if rec is None:
                    return _error(404, *_NOT_FOUND)
                if req.method == "DELETE":
                    del self._tables[table][sys_id]
                    return Response(204)
                return Response(200, {"result": self._render(table, rec, req.query)})
        return _error(405, "Method not Supported", f"{req.method} is not allowed here")

    # ---- reads -----------------------------------------------------------------------------

    def _list(self, req: Request, table: str) -> Response:
        """Query a table. Unknown plain field names in conditions are ignored (the platform's
        documented "ignore invalid query terms"), or select nothing when
        ``invalid_query_returns_no_rows``; terms the simulator does not implement answer 400."""
        q = req.query
        limit = _int(q.get("sysparm_limit"), DEFAULT_LIMIT)
        limit = limit if limit > 0 else DEFAULT_LIMIT
        offset = max(0, _int(q.get("sysparm_offset"), 0))
        with self._lock:
            try:
                rows = parse(q.get("sysparm_query", "")).select(
                    self._tables[table].values(),
                    self._schema(table),
                    invalid_returns_no_rows=self.invalid_query_returns_no_rows,
                )
            except UnsupportedQueryError as exc:
                return self._unsupported(exc)
            labels = self._labels()
            result = [self._render(table, r, q, labels) for r in rows[offset : offset + limit]]
        resp = Response(200, {"result": result})
        if not _flag(q, "sysparm_no_count"):
            resp.headers["X-Total-Count"] = str(len(rows))
        link = self._link_header(req, len(rows), offset, limit)
        if link and not _flag(q, "sysparm_suppress_pagination_header"):
            resp.headers["Link"] = link
        return resp

    def _unsupported(self, exc: UnsupportedQueryError) -> Response:
        self.errors.append(exc)  # surfaced to tests: a 400 here is rarely what a test wants
        return _error(400, "Simulator does not support this query", str(exc))

    def _schema(self, table: str) -> TableSchema:
        return TableSchema(table, self._fields, self._tables)

    def _link_header(self, req: Request, total: int, offset: int, limit: int) -> str:
        if offset == 0 and total <= limit:
            return ""  # one page: ServiceNow omits the header entirely

        def link(off: int, rel: str) -> str:
            query = {**req.query, "sysparm_offset": str(off), "sysparm_limit": str(limit)}
            return f'<{self.url}{req.path}?{urlencode(query)}>;rel="{rel}"'

        parts = [link(0, "first")]
        if offset > 0:
            parts.append(link(max(0, offset - limit), "prev"))
        if offset + limit < total:
            parts.append(link(offset + limit, "next"))
        parts.append(link(max(0, (total - 1) // limit * limit), "last"))
        return ",".join(parts)

    def _labels(self) -> dict[tuple[str, str, str], str]:
        return {
            (r["name"], r["element"], r["value"]): r["label"]
            for r in self._tables["sys_choice"].values()
            if r["language"] in ("en", "") and r["inactive"] != "true"
        }

    def _render(
        self, table: str, rec: Mapping[str, str], query: Mapping[str, str],
        labels: dict[tuple[str, str, str], str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Shape a raw record per sysparm_fields / sysparm_display_value / reference links.

        A dot-walked name in sysparm_fields (``caller_id.user_name``) answers the value it
        reaches under that very key, as ServiceNow does; unknown names are skipped.
        """
        mode = query.get("sysparm_display_value", "false").lower()
        with_links = not _flag(query, "sysparm_exclude_reference_link")
        labels = self._labels() if labels is None and mode != "false" else labels or {}
        schema = self._schema(table)
        out: dict[str, Any] = {}
        for name in _wanted(query) or self._fields[table]:
            where = schema.target(name)  # dot-walks were checked in _table_op
            if where is None:
                continue  # unknown names in sysparm_fields are silently skipped
            owner, field_name = where
            raw = schema.lookup(rec, name)
            shown = labels.get((owner, field_name, raw), labels.get(("task", field_name, raw), raw))
            target = schema.referenced_table(owner, field_name)
            if target is not None and raw:
                out[name] = self._reference(target, raw, mode, with_links)
            elif mode == "all":
                out[name] = {"display_value": shown, "value": raw}
            else:
                out[name] = shown if mode == "true" else raw
        return out

    def _reference(self, target: str, sys_id: str, mode: str, with_links: bool) -> Any:
        ref = self._tables[target].get(sys_id)
        full = {"display_value": ref.get("name", "") if ref else "",
                "link": f"{self.url}/api/now/table/{target}/{sys_id}", "value": sys_id}  # fmt: skip
        keys = {"false": ["link", "value"], "true": ["display_value", "link"]}.get(mode, list(full))
        keys = [k for k in keys if with_links or k != "link"]
        return full[keys[0]] if len(keys) == 1 else {k: full[k] for k in keys}

    # ---- writes ----------------------------------------------------------------------------

    def _write(self, req: Request, user: str, table: str, sys_id: str | None = None) -> Response:
        """POST / PATCH / PUT, shaped by the next staged write fault if there is one."""
        staged = self._write_faults.take()
        if staged is None:
            return self._apply_write(req, user, table, sys_id)
        if staged.kind in ("refuse", "drop_uncommitted"):
            self._write_faults.done()
            resp = _error(staged.status, "Service Unavailable", "write not applied")
            resp.drop = staged.kind == "drop_uncommitted"
            return resp
        try:
            late = staged.delay_s if staged.kind == "delay_then_commit" else 0.0
            resp = self._apply_write(req, user, table, sys_id, commit_after_s=late)
        except BaseException:
            self._write_faults.done()
            raise
        if staged.kind == "commit_then_delay":
            resp.hold_s = staged.delay_s
        resp.drop = staged.kind == "commit_then_drop"
        resp.finished.append(self._write_faults.done)
        return resp

    def _apply_write(
        self, req: Request, user: str, table: str, sys_id: str | None, commit_after_s: float = 0.0
    ) -> Response:
        ctype = req.headers.get("content-type", "")
        if "json" not in ctype.lower():
            return _error(415, "Unsupported Media Type", f"Content-Type {ctype!r} is not supported")
        try:
            data = json.loads(req.body or b"null")
        except ValueError:
            return _error(400, *_BAD_JSON)
        if isinstance(data, list) and data:
            data = data[0]  # "only the first record gets worked on and the rest ... are ignored"
        if not isinstance(data, dict):
            return _error(400, *_BAD_JSON)
        if sys_id is not None:
            with self._lock:
                exists, callback = sys_id in self._tables[table], self._before_write
            if not exists:
                return _error(404, *_NOT_FOUND)
            if callback is not None:
                callback(table, sys_id, data)  # outside the lock: it may write as a person
        if commit_after_s > 0:
            self._stopping.wait(commit_after_s)  # never holding the lock; stop() wakes it
        with self._lock:
            if sys_id is None:
                rec, changed, status = self._insert(table, data, user), True, 201
            elif sys_id in self._tables[table]:
                rec, status = self._tables[table][sys_id], 200
                changed = self._update(table, rec, data, user)
            else:
                return _error(404, *_NOT_FOUND)  # deleted while the write was held
            resp = Response(status, {"result": self._render(table, rec, req.query)})
            snapshot = dict(rec)
        if changed:
            op = "insert" if status == 201 else "update"
            resp.after.append(lambda: self._fire(table, snapshot, op, user))
        return resp

    def _new_record(self, table: str, user: str) -> dict[str, str]:
        now = self._stamp()
        rec = dict.fromkeys(self._fields[table], "")
        rec.update(DEFAULTS.get(table, {}))
        rec.update(sys_id=secrets.token_hex(16), sys_created_on=now, sys_created_by=user,
                   sys_updated_on=now, sys_updated_by=user, sys_mod_count="0")  # fmt: skip
        if table == "incident":
            rec.update(number=f"INC{next(self._numbers):07d}", opened_at=now)
        return rec

    def _insert(self, table: str, data: Mapping[str, Any], user: str) -> dict[str, str]:
        rec = self._new_record(table, user)
        notes = self._merge(table, rec, data, creating=True)
        self._derive(table, rec)
        self._tables[table][rec["sys_id"]] = rec
        self._add_journal(table, rec["sys_id"], notes, user)
        self._audit_insert(table, rec, notes, user)
        return rec

    def _update(self, table: str, rec: dict[str, str], data: Mapping[str, Any], user: str) -> bool:
        before = dict(rec)
        notes = self._merge(table, rec, data, creating=False)
        self._derive(table, rec)
        if rec == before and not notes:
            return False  # nothing changed: the instance skips the update and its business rules
        rec.update(sys_updated_on=self._stamp(), sys_updated_by=user,
                   sys_mod_count=str(int(rec["sys_mod_count"] or "0") + 1))  # fmt: skip
        self._add_journal(table, rec["sys_id"], notes, user)
        changes = [(k, before[k], rec[k]) for k in self._fields[table] if before[k] != rec[k]]
        self._add_audit(table, rec, changes, notes, user)
        return True

    def _merge(
        self, table: str, rec: dict[str, str], data: Mapping[str, Any], creating: bool
    ) -> list[tuple[str, str]]:
        """Copy known, writable fields into ``rec``; returns journal entries to append."""
        notes: list[tuple[str, str]] = []
        for key, value in data.items():
            if (
                key not in self._fields[table]
                or key in AUTO_FIELDS
                or (key == "sys_id" and not creating)
            ):
                continue  # unknown and system fields are silently ignored
            text = _as_text(value)
            if key in JOURNAL_FIELDS:
                if text:
                    notes.append((key, text))
            else:
                rec[key] = text  # choice values are stored as given, never validated
        return notes

    def _derive(self, table: str, rec: dict[str, str]) -> None:
        """Priority lookup rule: priority follows impact x urgency when the pair is known."""
        if table == "incident":
            rec["priority"] = self.priority_matrix.get(
                (rec["impact"], rec["urgency"]), rec["priority"]
            )

    def _add_journal(
        self, table: str, element_id: str, notes: list[tuple[str, str]], user: str
    ) -> None:
        for element, value in notes:
            row = self._new_record("sys_journal_field", user)
            row.update(element_id=element_id, element=element, name=table, value=value)
            self._tables["sys_journal_field"][row["sys_id"]] = row

    def _audit_insert(
        self, table: str, rec: Mapping[str, str], notes: list[tuple[str, str]], user: str
    ) -> None:
        if self.audit_inserts:  # glide.sys.audit_inserts: one row per field given a value
            self._add_audit(table, rec, [(k, "", v) for k, v in rec.items() if v], notes, user)

    def _add_audit(
        self,
        table: str,
        rec: Mapping[str, str],
        changes: list[tuple[str, str, str]],
        notes: list[tuple[str, str]],
        user: str,
    ) -> None:
        """sys_audit rows for one insert or update: a row per changed field, then per journal
        entry (oldvalue "", newvalue the entry text). ``record_checkpoint`` is the record's
        sys_mod_count after the write (0 for an insert); system fields are not audited.
        ``internal_checkpoint`` is hex(ms since epoch) + a 7-hex-digit counter (KB0869189)."""
        if table not in AUDITED_TABLES:
            return
        rows = [(k, old, new) for k, old, new in changes if k not in SYS_FIELDS]
        rows += [(element, "", text) for element, text in notes]
        millis = int(self.clock.now() * 1000)
        for fieldname, old, new in rows:
            row = self._new_record("sys_audit", user)
            seq = next(self._audit_seq) % 0x10000000
            row.update(tablename=table, fieldname=fieldname, documentkey=rec["sys_id"],
                       oldvalue=old, newvalue=new, user=user, reason="",
                       record_checkpoint=rec["sys_mod_count"] or "0",
                       internal_checkpoint=f"{millis:x}{seq:07x}")  # fmt: skip
            self._tables["sys_audit"][row["sys_id"]] = row

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":
    import sys

    from tests.simulators.__main__ import main

    main(["servicenow", *sys.argv[1:]])
