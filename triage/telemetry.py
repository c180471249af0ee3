"""Traces and metrics through the OpenTelemetry API; nothing at all when not configured.

``configure(env)`` sets up ``azure-monitor-opentelemetry`` when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set and returns an ``OtelTelemetry``; without it
nothing is imported and ``current()`` stays the no-op ``Telemetry`` (cold start unchanged).
Tests build ``OtelTelemetry`` on an SDK tracer/meter provider with in-memory readers. The
implementation (``OtelTelemetry``, ``MeasuredConnector``) lives in ``triage.telemetry_otel`` and
is re-exported from here on first use.

One trace per ticket: the webhook's span (``webhook <system>``, kind SERVER) puts its W3C
``traceparent`` in the job; the worker's span (``enrich <system>``, kind CONSUMER) continues
it, and each platform call is a child span (``<system> <operation>``). Attributes are
identifiers only, each checked against a pattern before it is set (``_clean``): never ticket
text, notes, reasons or exception messages (errors are named by type).

Metrics (names as they appear in Application Insights ``customMetrics``; ``docs/operations.md``):
``enrich.tickets`` {system, status}, ``enrich.fields.filled`` {system, field},
``enrich.fields.abstained`` {system, field}, ``enrich.confidence`` histogram {system, field},
``enrich.platform.duration`` histogram in ms {system, method, outcome},
``enrich.platform.throttled`` {system, method}, ``enrich.poison`` {system, reason}.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domain.models import EnrichmentResult
    from triage.telemetry_otel import MeasuredConnector, OtelTelemetry

__all__ = [
    "CONNECTION_SETTING",
    "METRICS",
    "MeasuredConnector",
    "OtelTelemetry",
    "SpanHandle",
    "Telemetry",
    "configure",
    "current",
    "set_current",
    "throttle_hook",
    "valid_traceparent",
]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    # PEP 562: the OpenTelemetry implementation loads on first use (cold start unchanged).
    if name in ("MeasuredConnector", "OtelTelemetry"):
        return getattr(importlib.import_module("triage.telemetry_otel"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
SCOPE = "ticket_enrichment"

#: W3C trace context, version 00 only, lower-case hex, neither id all zeros.
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

METRICS = {
    "tickets": "enrich.tickets",
    "filled": "enrich.fields.filled",
    "abstained": "enrich.fields.abstained",
    "confidence": "enrich.confidence",
    "duration": "enrich.platform.duration",
    "throttled": "enrich.platform.throttled",
    "http_429": "enrich.platform.http_429",
    "poison": "enrich.poison",
}

# The only attributes a span or metric ever carries, each with the shape its value must have.
_IDENT = r"[A-Za-z][A-Za-z0-9_]{0,63}"
_ATTRIBUTES: dict[str, re.Pattern[str]] = {
    "system": re.compile(r"servicenow|dataverse|storage"),
    "table": re.compile(r"[a-z][a-z0-9_]{0,79}"),
    "record_id": re.compile(r"[0-9a-f]{32}|[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"),
    "job_id": re.compile(r"[A-Za-z0-9-]{1,64}"),
    "status": re.compile(_IDENT),
    "outcome": re.compile(_IDENT),
    "field": re.compile(_IDENT),
    "method": re.compile(_IDENT),
    "reason": re.compile(_IDENT),
    "source": re.compile(r"webhook|backfill|cli"),
    "http_status": re.compile(r"[1-5][0-9]{2}"),
    "dequeue_count": re.compile(r"[0-9]{1,3}"),
}
_FIELDS_WRITTEN = "fields_written"  # a list of field names
_PREFIX = "enrich."

# Connector operations timed as platform calls (iter_records is a generator: not timed).
_MEASURED = frozenset(
    {"get", "update", "has_note", "overwritten", "own_user", "fallback_text", "read_page",
     "update_many", "who_am_i", "journal"}
)  # fmt: skip


def valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a W3C ``traceparent`` we accept (version 00, non-zero ids)."""
    match = _TRACEPARENT_RE.fullmatch(value)
    if match is None:
        return False
    return set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}


def _clean(attributes: Mapping[str, object]) -> dict[str, Any]:
    """Keep only known attributes whose value has the expected shape (prefixed ``enrich.``)."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key == _FIELDS_WRITTEN and isinstance(value, list | tuple):
            names = [v for v in value if isinstance(v, str) and _ATTRIBUTES["field"].fullmatch(v)]
            out[_PREFIX + key] = sorted(names)
            continue
        pattern = _ATTRIBUTES.get(key)
        if pattern is None or value is None:
            continue
        text = str(value)
        if pattern.fullmatch(text):
            out[_PREFIX + key] = value if isinstance(value, int) else text
    return out


class SpanHandle:
    """The span a block runs in; the no-op one ignores everything."""

    traceparent: str | None = None

    def set(self, **attributes: object) -> None:
        """Add attributes (unknown keys and badly shaped values are dropped)."""

    def fail(self, error: BaseException | str) -> None:
        """Mark the span failed, named by the error's type (never its message)."""


_NOOP_SPAN = SpanHandle()


class Telemetry:
    """The no-op telemetry: the default when no connection string is configured."""

    enabled = False

    @contextmanager
    def span(
        self, name: str, *, kind: str = "internal", parent: str | None = None, **attributes: object
    ) -> Iterator[SpanHandle]:
        """Run a block in a span (``kind``: server, consumer, client, internal)."""
        yield _NOOP_SPAN

    def ticket(self, result: EnrichmentResult, fields: Sequence[str] = ()) -> None:
        """Count one ticket's outcome; ``fields`` are the canonical fields enrichment covers."""

    def platform_call(self, system: str, method: str, seconds: float, outcome: str) -> None:
        """Record one platform call's latency (and a 429 when ``outcome`` is ``throttled``)."""

    def poison(self, system: str, reason: str) -> None:
        """Count one message moved (or about to be moved) to a poison queue."""

    def http_throttled(self, system: str) -> None:
        """Count one 429 answer, retried or not (the HTTP client's ``on_throttle`` hook)."""

    def measured(self, connector: Any) -> Any:
        """``connector`` itself (no-op), or a wrapper timing its platform calls."""
        return connector


_current: Telemetry = Telemetry()


def throttle_hook(
    system: str, then: Callable[[float], None] | None = None
) -> Callable[[float], None]:
    """An ``on_throttle`` hook for a connector: counts each 429 in the process's telemetry,
    then calls ``then`` (e.g. a backfill budget's ``throttled``)."""

    def hook(wait_s: float) -> None:
        current().http_throttled(system)
        if then is not None:
            then(wait_s)

    return hook


def current() -> Telemetry:
    """The process's telemetry (the no-op one until ``configure`` found a connection string)."""
    return _current


def set_current(telemetry: Telemetry) -> Telemetry:
    """Make ``telemetry`` the process's; returns the previous one (tests restore it)."""
    global _current
    previous, _current = _current, telemetry
    return previous


def configure(
    env: Mapping[str, str] | None = None,
    *,
    setup: Callable[..., None] | None = None,
) -> Telemetry:
    """Configure Azure Monitor when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

    Without it nothing is imported and the no-op telemetry stays. With it,
    ``configure_azure_monitor`` (or ``setup``, for tests) installs the global providers;
    Entra ID auth comes from ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (read by the
    exporter). Logs are left to the Functions host (it already sends them, redacted), so the
    distro's log export is off. A failure is logged and leaves telemetry off: telemetry must
    never stop the app.
    """
    env = os.environ if env is None else env
    connection = (env.get(CONNECTION_SETTING) or "").strip()
    if not connection:
        return _current
    try:
        if setup is None:
            from azure.monitor.opentelemetry import configure_azure_monitor

            setup = configure_azure_monitor
        setup(connection_string=connection, disable_logging=True, enable_live_metrics=False)
        from triage.telemetry_otel import OtelTelemetry

        telemetry = OtelTelemetry()
    except Exception as exc:  # a broken exporter must not take the functions down
        log.error("telemetry not configured (%s); continuing without it", type(exc).__name__)
        return _current
    set_current(telemetry)
    log.info("telemetry configured (Azure Monitor)")
    return telemetry
