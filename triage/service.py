"""What the Functions triggers do, as plain functions over injected collaborators.

``function_app.py`` only converts between Azure Functions types and these calls, so everything
here is tested without the Functions host.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from connectors.state import MemoryReplayGuard, ReplayGuard
from domain.errors import (
    AuthError,
    ClaimedError,
    ConfigError,
    ConnectorError,
    InboundError,
    MappingError,
    NotFoundError,
    RejectedError,
    ThrottledError,
)
from domain.models import EnrichmentResult
from domain.settings import Settings
from triage.dataverse_hook import accept_dataverse_call
from triage.dataverse_inbound import WebhookKeys
from triage.inbound import TIMESTAMP_HEADER, check_size, parse_event, verify_signature
from triage.jobs import EnrichJob, message_bytes, poison_message
from triage.pipeline import Pipeline
from triage.replies import WebhookReply, error_reply
from triage.telemetry import SpanHandle, Telemetry, current

#: host.json ``maxDequeueCount``: a failure on this attempt sends the message to poison.
HOST_MAX_DEQUEUE = 5

if TYPE_CHECKING:
    from connectors.queue import JobQueue

__all__ = ["Service", "WebhookReply"]  # WebhookReply re-exported from triage.replies

log = logging.getLogger(__name__)

#: The longest re-queue delay without a platform hint: ServiceNow rate limits are per hour.
MAX_THROTTLED_DELAY_S = 3600.0
#: Claims are history once done; a week covers any redelivery or re-run of the same input.
CLAIM_RETENTION_S = 7 * 24 * 3600.0

# Errors that another attempt cannot fix: the job goes straight to the poison queue.
_PERMANENT = (AuthError, RejectedError, MappingError, ConfigError)


@dataclass
class Service:
    """The webhook and queue-worker logic, with every dependency passed in."""

    settings: Settings
    pipeline: Pipeline
    requeue: JobQueue
    poison: JobQueue
    replay: ReplayGuard | None = None  # None: a per-process guard on ``now`` (CLI, tests)
    now: Callable[[], float] = time.time
    #: Pipelines of further platforms by system ("dataverse"), besides ``pipeline``'s own.
    others: Mapping[str, Pipeline] = field(default_factory=dict)
    #: The keys a Dataverse webhook call must carry; None refuses Dataverse calls (503).
    dataverse_keys: WebhookKeys | None = None
    #: Spans and metrics (``triage.telemetry``); None: the process's (no-op unless configured).
    telemetry: Telemetry | None = None

    def __post_init__(self) -> None:
        if self.replay is None:
            self.replay = MemoryReplayGuard(now=self.now)
        self._replay: ReplayGuard = self.replay
        self._telemetry: Telemetry = self.telemetry if self.telemetry is not None else current()

    def accept_servicenow_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookReply:
        """Authenticate and validate a webhook call; never raises for bad input.

        Runs in the ticket's root span; the job carries its traceparent to the worker.
        """
        with self._telemetry.span("webhook servicenow", kind="server", system="servicenow") as s:
            reply = self._accept_servicenow_webhook(body, headers)
            return _traced(reply, s)

    def _accept_servicenow_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookReply:
        hook = self.settings.webhook
        if hook.secret is None:
            log.error("ENRICH_WEBHOOK__SECRET is not set; refusing webhook calls")
            return error_reply(503, "not_configured", "the webhook secret is not configured")
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            check_size(body, hook.max_body_bytes)
            verify_signature(
                body, lowered, hook.accepted_secrets(), tolerance_s=hook.tolerance_s, now=self.now
            )
            event = parse_event(
                body, lowered.get("content-type"), allowed_tables=hook.allowed_tables
            )
        except InboundError as exc:
            log.warning("webhook refused (%s): %s", exc.status, exc)
            return error_reply(exc.status, exc.code, str(exc))
        refused = self._refuse_replay(body, lowered)
        if refused is not None:
            return refused
        job = EnrichJob(table=event.table, record_id=event.sys_id, received_at=self.now())
        return WebhookReply(202, {"status": "accepted", "record_id": event.sys_id}, job)

    def accept_dataverse_webhook(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> WebhookReply:
        """Authenticate and validate a Dataverse webhook call; never raises for bad input."""
        with self._telemetry.span("webhook dataverse", kind="server", system="dataverse") as s:
            return _traced(self._accept_dataverse_webhook(body, headers, query), s)

    def _accept_dataverse_webhook(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> WebhookReply:
        dataverse = self.pipeline_for("dataverse")
        own: str | None = None
        if dataverse is not None:
            try:
                own = dataverse.integration_user()  # WhoAmI once, then cached
            except ConnectorError as exc:  # the worker's loop guard still catches our events
                log.warning("could not resolve our application user: %s", exc)
        return accept_dataverse_call(
            body,
            headers,
            query,
            keys=self.dataverse_keys,
            application_user_id=own,
            max_bytes=self.settings.dataverse_webhook.max_body_bytes,
            now=self.now(),
        )

    def pipeline_for(self, system: str) -> Pipeline | None:
        """The pipeline of ``system``, or None when that platform is not configured."""
        if self.pipeline.mapping.system == system:
            return self.pipeline
        return self.others.get(system)

    def purge_state(self) -> dict[str, int]:
        """Forget expired replay keys and old claims (the hourly timer); never raises."""
        counts: dict[str, int] = {}
        jobs: dict[str, Callable[[], int]] = {
            "replay": self._replay.purge,
            "claims": lambda: self.pipeline.claims.purge(CLAIM_RETENTION_S),
        }
        for name, purge in jobs.items():
            try:
                counts[name] = purge()
            except ConnectorError as exc:
                log.warning("could not purge %s state: %s", name, exc)
        log.info("purged state: %s", counts)
        return counts

    def _refuse_replay(self, body: bytes, headers: Mapping[str, str]) -> WebhookReply | None:
        """409 for a signed request seen before; the key is what the signature covers."""
        stamp = headers.get(TIMESTAMP_HEADER, "")
        key = hashlib.sha256(stamp.encode("ascii", "replace") + b"." + body).hexdigest()
        # verify_signature accepted the timestamp: it is a plain integer within the tolerance.
        expires_at = int(stamp) + self.settings.webhook.tolerance_s
        try:
            first = self._replay.first_use(key, expires_at=expires_at)
        except ConnectorError as exc:
            # Fail closed: without the store a captured request could be replayed at will.
            log.error("replay store unavailable; refusing webhook calls: %s", exc)
            return error_reply(503, "unavailable", "the replay store is unavailable; try again")
        if not first:
            log.warning("webhook refused (409): a repeat of an accepted request")
            return error_reply(409, "replayed", "this signed request was already accepted")
        return None

    def process_job(
        self, message: bytes | str, *, dequeue_count: int = 1, job_id: str | None = None
    ) -> EnrichmentResult | None:
        """Run one queued job: ``message`` as received (bytes are decoded as strict UTF-8).

        Raises transient errors so the host retries (and finally moves the message to the
        poison queue). Permanent failures go to the poison queue at once, in the envelope of
        ``triage.jobs.poison_message``; a throttled job is re-enqueued with the platform's wait
        as visibility delay. A malformed message never raises: it is poisoned, or when even
        that fails, logged by hash and size.

        Runs in a span continuing the webhook's trace (the job's ``traceparent``); ``job_id``
        (the queue message id) names the job in it.
        """
        try:
            job = EnrichJob.from_message(message)
        except InboundError as exc:
            self._poison_malformed(message, f"{exc.code}: {exc}")
            self._telemetry.poison("", "malformed_job")
            return None
        telemetry = self._telemetry
        ids = {"system": job.system, "table": job.table, "record_id": job.record_id}
        with telemetry.span(
            f"enrich {job.system}",
            kind="consumer",
            parent=job.traceparent,
            job_id=job_id,
            source=job.source,
            dequeue_count=dequeue_count,
            **ids,
        ) as span:
            try:
                result = self._process(job, message, dequeue_count)
            except Exception:
                if dequeue_count >= HOST_MAX_DEQUEUE:  # the host poisons it after this raise
                    telemetry.poison(job.system, "retries_exhausted")
                span.set(status="failed")
                raise
            if result is not None:
                writes = [d.field for d in result.decisions if d.action == "write"]
                written = writes if result.status in ("written", "conflict") else []
                span.set(status=result.status, fields_written=written)
                pipeline = self.pipeline_for(job.system)
                fields = [] if pipeline is None else list(pipeline.mapping.fields)
                telemetry.ticket(result, [f for f in fields if pipeline_mode(pipeline, f)])
            return result

    def _process(
        self, job: EnrichJob, message: bytes | str, dequeue_count: int
    ) -> EnrichmentResult | None:
        pipeline = self.pipeline_for(job.system)
        if pipeline is None:
            reason = f"not_configured: no {job.system} platform is configured"
            log.error("job for %s %s: %s", job.system, job.record_id, reason)
            self.poison.send(poison_message(message, reason))
            self._telemetry.poison(job.system, "not_configured")
            return None
        try:
            return pipeline.enrich_record(job.table, job.record_id, retry=dequeue_count > 1)
        except (ThrottledError, ClaimedError) as exc:
            self._requeue(job, exc)
            return None
        except NotFoundError:
            log.warning("record %s %s no longer exists; job dropped", job.table, job.record_id)
            return None
        except _PERMANENT as exc:
            log.error("job for %s failed permanently, moved to poison: %s", job.record_id, exc)
            # If the poison queue is down too, this raises: the host retries, then poisons.
            self.poison.send(poison_message(message, f"{type(exc).__name__}: {exc}"))
            self._telemetry.poison(job.system, type(exc).__name__)
            return None
        finally:
            log.debug("job %s attempt %d done", job.record_id, dequeue_count)

    def _poison_malformed(self, message: bytes | str, reason: str) -> None:
        data = message_bytes(message)
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.poison.send(poison_message(data, reason))
        except ConnectorError as exc:
            # Retrying cannot fix the message: log what identifies it (never its content).
            log.error(
                "malformed job (sha256 %s, %d bytes) could not be poisoned (%s): %s",
                digest,
                len(data),
                exc,
                reason,
            )
            return
        log.error("malformed job (sha256 %s, %d bytes) poisoned: %s", digest, len(data), reason)

    def _requeue(self, job: EnrichJob, exc: ThrottledError | ClaimedError) -> None:
        """Put the job back with a visibility delay instead of burning a host retry."""
        if job.requeues >= self.settings.queue.max_requeues:
            raise exc
        delay = exc.retry_after_s
        if delay is None:
            # No hint (a headerless 429): back off exponentially, so the requeue budget spans
            # a whole rate-limit hour and more (60 s, 120 s, ... capped at an hour).
            base = self.settings.queue.throttled_delay_s
            delay = min(base * 2.0 ** min(job.requeues, 16), max(base, MAX_THROTTLED_DELAY_S))
        again = job.model_copy(update={"requeues": job.requeues + 1})
        self.requeue.send(again.to_message(), delay_s=delay)
        why = "busy elsewhere" if isinstance(exc, ClaimedError) else "throttled"
        log.warning("%s on %s; re-enqueued with a %.0f s delay", why, job.record_id, delay)


def _traced(reply: WebhookReply, span: SpanHandle) -> WebhookReply:
    """Tag the webhook span with the answer; the job carries the span's trace context."""
    span.set(http_status=reply.status)
    job = reply.job
    if job is None:
        return reply
    span.set(table=job.table, record_id=job.record_id)
    if span.traceparent is None:
        return reply
    traced = job.model_copy(update={"traceparent": span.traceparent})
    return WebhookReply(reply.status, reply.body, traced)


def pipeline_mode(pipeline: Pipeline | None, field_name: str) -> bool:
    """Whether enrichment covers ``field_name`` (its mapping mode is not ``off``)."""
    return pipeline is not None and pipeline.mapping.mode(field_name) != "off"
