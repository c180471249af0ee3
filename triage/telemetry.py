"""Traces and metrics through the OpenTelemetry API; nothing at all when not configured.

``configure(env)`` sets up ``azure-monitor-opentelemetry`` when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set and returns an ``OtelTelemetry``; without it
nothing is imported and ``current()`` stays the no-op ``Telemetry`` (cold start unchanged).
Tests build ``OtelTelemetry`` on an SDK tracer/meter provider with in-memory readers.

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

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from domain.models import EnrichmentResult

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


class OtelTelemetry(Telemetry):
    """Spans and metrics through the OpenTelemetry API on the given providers."""

    enabled = True

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        monotonic: Callable[[], float] = time.perf_counter,
    ) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self._tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(SCOPE)
        self.monotonic = monotonic
        self._tickets = meter.create_counter(METRICS["tickets"], description="tickets processed")
        self._filled = meter.create_counter(METRICS["filled"], description="fields written")
        self._abstained = meter.create_counter(
            METRICS["abstained"], description="fields the enrichers had no answer for"
        )
        self._confidence = meter.create_histogram(
            METRICS["confidence"], description="confidence of each suggestion"
        )
        self._duration = meter.create_histogram(
            METRICS["duration"], unit="ms", description="platform call latency"
        )
        self._throttled = meter.create_counter(
            METRICS["throttled"], description="platform calls that ended throttled"
        )
        self._http_429 = meter.create_counter(
            METRICS["http_429"], description="every 429 answer, including those retried"
        )
        self._poison = meter.create_counter(METRICS["poison"], description="poisoned messages")

    @contextmanager
    def span(
        self, name: str, *, kind: str = "internal", parent: str | None = None, **attributes: object
    ) -> Iterator[SpanHandle]:
        """Run a block in a span; ``parent`` (a valid traceparent) makes it that trace's child."""
        trace = self._trace
        kinds = {
            "server": trace.SpanKind.SERVER,
            "consumer": trace.SpanKind.CONSUMER,
            "client": trace.SpanKind.CLIENT,
            "internal": trace.SpanKind.INTERNAL,
        }
        context = self._context_of(parent) if parent else None
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=kinds.get(kind, trace.SpanKind.INTERNAL),
            attributes=_clean(attributes),
            record_exception=False,  # the exception's text may quote a platform's answer
            set_status_on_exception=False,
        ) as span:
            handle = _OtelSpan(span, trace)
            try:
                yield handle
            except BaseException as exc:
                handle.fail(exc)
                raise

    def _context_of(self, traceparent: str) -> Any:
        match = _TRACEPARENT_RE.fullmatch(traceparent)
        if match is None or not valid_traceparent(traceparent):
            return None  # never trusted beyond its format: a bad one starts a new trace
        trace = self._trace
        remote = trace.SpanContext(
            trace_id=int(match.group(1), 16),
            span_id=int(match.group(2), 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(match.group(3), 16) & 0x01),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(remote))

    def ticket(self, result: EnrichmentResult, fields: Sequence[str] = ()) -> None:
        """Count the ticket by status, and per field: filled, abstained, confidence."""
        system = result.system
        self._tickets.add(1, _clean({"system": system, "status": result.status}))
        suggested = set()
        for suggestion in result.suggestions:
            suggested.add(suggestion.field)
            dims = _clean({"system": system, "field": suggestion.field})
            self._confidence.record(suggestion.confidence, dims)
        if result.status in ("written", "conflict"):
            for decision in result.decisions:
                if decision.action == "write":
                    self._filled.add(1, _clean({"system": system, "field": decision.field}))
        if result.status in ("skipped",):
            return  # the enrichers did not run: nothing abstained
        for name in fields:
            if name not in suggested:
                self._abstained.add(1, _clean({"system": system, "field": name}))

    def platform_call(self, system: str, method: str, seconds: float, outcome: str) -> None:
        """Latency in ms by system, operation and outcome; a 429 also counts as throttled."""
        dims = {"system": system, "method": method}
        self._duration.record(seconds * 1000.0, _clean({**dims, "outcome": outcome}))
        if outcome == "throttled":
            self._throttled.add(1, _clean(dims))

    def poison(self, system: str, reason: str) -> None:
        """Count one poisoned message by system and a reason code (an error type)."""
        self._poison.add(1, _clean({"system": system, "reason": reason}))

    def http_throttled(self, system: str) -> None:
        """Count one 429 answer by system."""
        self._http_429.add(1, _clean({"system": system}))

    def measured(self, connector: Any) -> Any:
        """Wrap ``connector`` so each platform call is timed and traced (once)."""
        if isinstance(connector, MeasuredConnector):
            return connector
        return MeasuredConnector(connector, self)


class _OtelSpan(SpanHandle):
    def __init__(self, span: Span, trace: Any) -> None:
        self._span = span
        self._trace = trace
        ctx = span.get_span_context()
        if ctx.is_valid:
            self.traceparent = (
                f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
            )

    def set(self, **attributes: object) -> None:
        self._span.set_attributes(_clean(attributes))

    def fail(self, error: BaseException | str) -> None:
        name = error if isinstance(error, str) else type(error).__name__
        name = name if _ATTRIBUTES["reason"].fullmatch(name) else "error"
        self._span.set_attribute(_PREFIX + "error", name)
        self._span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, name))


class MeasuredConnector:
    """A connector whose platform calls are timed, traced and checked for 429s.

    Every other attribute is the wrapped connector's. The outcome of a call is ``ok``,
    ``throttled`` (429), ``not_found`` or ``error``.
    """

    def __init__(self, inner: Any, telemetry: OtelTelemetry) -> None:
        self._inner = inner
        self._telemetry = telemetry

    @property
    def wrapped(self) -> Any:
        """The connector this one measures."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name not in _MEASURED or not callable(value):
            return value
        return self._timed(name, value)

    def _timed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        from domain.errors import ConnectorError, NotFoundError, ThrottledError

        telemetry = self._telemetry
        system = str(getattr(self._inner, "system", "") or "")

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = telemetry.monotonic()
            outcome = "ok"
            with telemetry.span(f"{system} {name}", kind="client", system=system, method=name) as s:
                try:
                    return call(*args, **kwargs)
                except ThrottledError:
                    outcome = "throttled"
                    raise
                except NotFoundError:
                    outcome = "not_found"
                    raise
                except ConnectorError as exc:
                    outcome = "error"
                    s.set(http_status=exc.status_code)
                    raise
                finally:
                    elapsed = telemetry.monotonic() - started
                    telemetry.platform_call(system, name, elapsed, outcome)

        return timed


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
        telemetry = OtelTelemetry()
    except Exception as exc:  # a broken exporter must not take the functions down
        log.error("telemetry not configured (%s); continuing without it", type(exc).__name__)
        return _current
    set_current(telemetry)
    log.info("telemetry configured (Azure Monitor)")
    return telemetry
