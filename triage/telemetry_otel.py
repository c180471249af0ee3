"""The OpenTelemetry implementation of ``triage.telemetry.Telemetry``: spans, metrics and a
connector wrapper that times platform calls.

Loaded only when telemetry is configured (``triage.telemetry.configure``) or a test builds an
``OtelTelemetry``; ``opentelemetry`` itself is imported in ``OtelTelemetry.__init__``. The no-op
API, the metric names and the attribute checks are in ``triage.telemetry``, which re-exports
``OtelTelemetry`` and ``MeasuredConnector`` lazily.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from triage.telemetry import (
    _ATTRIBUTES,
    _MEASURED,
    _PREFIX,
    _TRACEPARENT_RE,
    METRICS,
    SCOPE,
    SpanHandle,
    Telemetry,
    _clean,
    valid_traceparent,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from domain.models import EnrichmentResult

__all__ = ["MeasuredConnector", "OtelTelemetry"]


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
