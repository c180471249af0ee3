"""What the Functions triggers do, as plain functions over injected collaborators.

``function_app.py`` only converts between Azure Functions types and these calls, so everything
here is tested without the Functions host.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from triage.errors import (
    AuthError,
    ConfigError,
    InboundError,
    MappingError,
    NotFoundError,
    RejectedError,
    ThrottledError,
)
from triage.inbound import check_size, parse_event, verify_signature
from triage.jobs import EnrichJob
from triage.models import EnrichmentResult
from triage.pipeline import Pipeline
from triage.settings import Settings

if TYPE_CHECKING:
    from connectors.queue import JobQueue

__all__ = ["Service", "WebhookReply"]

log = logging.getLogger(__name__)

# Errors that another attempt cannot fix: the job goes straight to the poison queue.
_PERMANENT = (AuthError, RejectedError, MappingError, ConfigError)


@dataclass(frozen=True)
class WebhookReply:
    """The HTTP answer to a webhook call, and the job to enqueue when accepted."""

    status: int
    body: dict[str, Any]
    job: EnrichJob | None = None


@dataclass
class Service:
    """The webhook and queue-worker logic, with every dependency passed in."""

    settings: Settings
    pipeline: Pipeline
    requeue: JobQueue
    poison: JobQueue
    now: Callable[[], float] = time.time

    def accept_servicenow_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookReply:
        """Authenticate and validate a webhook call; never raises for bad input."""
        hook = self.settings.webhook
        if hook.secret is None:
            log.error("ENRICH_WEBHOOK__SECRET is not set; refusing webhook calls")
            return _error(503, "not_configured", "the webhook secret is not configured")
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            check_size(body, hook.max_body_bytes)
            secret = hook.secret.get_secret_value().encode()
            verify_signature(body, lowered, secret, tolerance_s=hook.tolerance_s, now=self.now)
            event = parse_event(
                body, lowered.get("content-type"), allowed_tables=hook.allowed_tables
            )
        except InboundError as exc:
            log.warning("webhook refused (%s): %s", exc.status, exc)
            return _error(exc.status, exc.code, str(exc))
        job = EnrichJob(table=event.table, record_id=event.sys_id, received_at=self.now())
        return WebhookReply(202, {"status": "accepted", "record_id": event.sys_id}, job)

    def process_job(self, text: str, *, dequeue_count: int = 1) -> EnrichmentResult | None:
        """Run one queued job.

        Raises transient errors so the host retries (and finally moves the message to the
        poison queue). Permanent failures go to the poison queue at once; a throttled job is
        re-enqueued with the platform's wait as visibility delay.
        """
        try:
            job = EnrichJob.from_message(text)
        except InboundError as exc:
            log.error("malformed job moved to the poison queue: %s", exc)
            self.poison.send(text)
            return None
        try:
            return self.pipeline.enrich_record(job.table, job.record_id)
        except ThrottledError as exc:
            self._requeue(job, exc)
            return None
        except NotFoundError:
            log.warning("record %s %s no longer exists; job dropped", job.table, job.record_id)
            return None
        except _PERMANENT as exc:
            log.error("job for %s failed permanently, moved to poison: %s", job.record_id, exc)
            self.poison.send(text)
            return None
        finally:
            log.debug("job %s attempt %d done", job.record_id, dequeue_count)

    def _requeue(self, job: EnrichJob, exc: ThrottledError) -> None:
        if job.requeues >= self.settings.queue.max_requeues:
            raise exc
        delay = exc.retry_after_s or self.settings.queue.throttled_delay_s
        again = job.model_copy(update={"requeues": job.requeues + 1})
        self.requeue.send(again.to_message(), delay_s=delay)
        log.warning("throttled on %s; re-enqueued with a %.0f s delay", job.record_id, delay)


def _error(status: int, code: str, message: str) -> WebhookReply:
    return WebhookReply(status, {"error": {"code": code, "message": message}})
