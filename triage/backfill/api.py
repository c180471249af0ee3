"""The backfill HTTP API, as pure functions: bytes and parameters in, status and JSON out.

``POST /api/backfill`` (function key) submits a run: a small UTF-8 JSON object
``{"platform", "query" | "filter", "since", "until", "by", "limit", "dry_run"}``, validated
strictly; the answer is 202 ``{"run_id", "windows", "status_url"}``.
``GET /api/backfill/{run_id}`` answers the run's status (``status_body``). Errors are small
JSON ``{"error": {"code", "message"}}`` naming the problem; a message never holds more than
``EXCERPT_CHARS`` characters of anything the caller sent, and bad input never gets a 5xx.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.backfill_models import RunStatus
from domain.errors import ConfigError, ConnectorError, InboundError
from triage.backfill.service import BackfillService
from triage.backfill.spec import PLATFORMS
from triage.inbound import (
    bounded,
    check_size,
    describe_validation_error,
    excerpt,
    json_object,
)
from triage.replies import WebhookReply, error_reply

__all__ = [
    "DEFAULT_DAYS",
    "MAX_BODY_BYTES",
    "SubmitRequest",
    "parse_when",
    "status_body",
    "status_call",
    "submit_call",
    "time_range",
]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
#: Without ``since``, a run covers this many days before ``until``.
DEFAULT_DAYS = 30
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SPEC_KEYS = ("system", "by", "since", "until", "limit", "dry_run", "origin")


class SubmitRequest(BaseModel):
    """The body of ``POST /api/backfill``: strict types, no other keys."""

    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)

    platform: Literal["servicenow", "dynamics", "dataverse"]
    query: str | None = Field(None, min_length=1, max_length=2000)
    filter: str | None = Field(None, min_length=1, max_length=2000)
    since: str | None = Field(None, max_length=40)
    until: str | None = Field(None, max_length=40)
    by: Literal["created", "updated"] = "created"
    limit: int | None = Field(None, ge=1, le=100_000_000)
    dry_run: bool = False


def parse_when(text: str, what: str) -> datetime:
    """A date (``2024-01-31``, midnight UTC) or ISO-8601 time (UTC when it names no zone).

    ``InboundError`` naming ``what`` (never the text) when it reads as neither.
    """
    raw = text.strip()
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InboundError(
            f"{what}: not a date (YYYY-MM-DD) or an ISO-8601 time", code="invalid_body"
        ) from None
    return value


def time_range(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """``[since, until)``: ``until`` defaults to now, ``since`` to ``DEFAULT_DAYS`` before it."""
    end = until or now.astimezone(UTC)
    try:
        start = since or end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        raise InboundError("until: too early for a default since", code="invalid_body") from None
    if start >= end:
        raise InboundError("since must be before until", code="invalid_body")
    return start, end


def submit_call(
    body: bytes,
    headers: Mapping[str, str],
    service: BackfillService,
    *,
    max_bytes: int = MAX_BODY_BYTES,
) -> WebhookReply:
    """Answer ``POST /api/backfill``: 202 with the run id and windows queued, or 4xx/503."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        request = _parse(body, lowered.get("content-type"), max_bytes)
        system = PLATFORMS[request.platform]
        if request.query and request.filter:
            raise InboundError("give query or filter, not both", code="invalid_body")
        if system == "servicenow" and request.filter:
            raise InboundError(
                "filter is for dynamics; servicenow takes query", code="invalid_body"
            )
        if system == "dataverse" and request.query:
            raise InboundError(
                "query is for servicenow; dynamics takes filter", code="invalid_body"
            )
        since, until = time_range(
            parse_when(request.since, "since") if request.since else None,
            parse_when(request.until, "until") if request.until else None,
            service.now(),
        )
        spec = service.spec(
            "servicenow" if system == "servicenow" else "dataverse",
            since,
            until,
            by=request.by,
            query=request.query or request.filter,
            limit=request.limit,
            dry_run=request.dry_run,
            origin="http",
        )
    except InboundError as exc:
        return error_reply(exc.status, exc.code, bounded(str(exc)))
    except ValidationError as exc:
        problems = describe_validation_error(exc, what="body")
        return error_reply(400, "invalid_body", bounded(f"invalid backfill: {problems}"))
    try:
        service.check(spec)
    except ConfigError as exc:
        return error_reply(400, "invalid_run", bounded(str(exc)))
    except ConnectorError as exc:  # a mapping read from a blob, a model from a URL
        log.warning("backfill not submitted: %s", exc)
        return error_reply(503, "unavailable", "the platform settings could not be read")
    try:
        windows = service.submit(spec)
    except ConfigError as exc:
        log.error("backfill not submitted: %s", exc)
        return error_reply(503, "not_configured", "backfills need Storage, not configured")
    except ConnectorError as exc:
        log.warning("backfill not submitted: %s", exc)
        return error_reply(503, "unavailable", "Storage is unavailable; try again")
    answer = {
        "run_id": spec.run_id,
        "windows": windows,
        "dry_run": spec.dry_run,
        "status_url": f"/api/backfill/{spec.run_id}",
    }
    return WebhookReply(202, answer)


def _parse(body: bytes, content_type: str | None, max_bytes: int) -> SubmitRequest:
    check_size(body, max_bytes)
    data = json_object(body, content_type)
    return SubmitRequest.model_validate(data)


def status_call(run_id: str, service: BackfillService) -> WebhookReply:
    """Answer ``GET /api/backfill/{run_id}``: 200 with ``status_body``, 404, 400 or 503."""
    if not _RUN_ID.fullmatch(run_id):
        return error_reply(400, "invalid_run_id", "not a run id (letters, digits, . _ -)")
    try:
        status = service.status(run_id)
    except ConnectorError as exc:
        log.warning("backfill status unavailable: %s", exc)
        return error_reply(503, "unavailable", "Storage is unavailable; try again")
    except ConfigError:
        return error_reply(404, "not_found", f"no readable run {excerpt(run_id)}")
    if status.state == "missing":
        return error_reply(404, "not_found", f"no run {excerpt(run_id)}")
    return WebhookReply(200, status_body(status))


def status_body(status: RunStatus) -> dict[str, Any]:
    """A run's status as JSON: state, windows by status, counts and why, failed windows."""
    counts = status.counts
    spec = status.spec
    return {
        "run_id": status.run_id,
        "state": status.state,
        "windows": status.windows,
        "by_status": dict(sorted(status.by_status.items())),
        "counts": {
            "scanned": counts.scanned,
            "filled": counts.filled,
            "skipped": counts.skipped,
            "failed": counts.failed,
        },
        "filled": counts.by_kind("filled"),
        "skipped": counts.by_kind("skipped"),
        "failed": counts.by_kind("failed"),
        "failures": [{"window": i, "reason": bounded(r)} for i, r in status.failures[:50]],
        "taken": status.taken,
        "spec": {k: spec[k] for k in _SPEC_KEYS if k in spec},
    }
