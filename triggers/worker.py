"""The queue worker: one job per invocation; transient failures raise for the host's retry."""

from __future__ import annotations

import azure.functions as func

from triage.jobs import JOBS_QUEUE
from triggers import services

__all__ = ["bp", "enrich_worker"]

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("enrich_worker")
@bp.queue_trigger(arg_name="msg", queue_name=JOBS_QUEUE, connection="AzureWebJobsStorage")
def enrich_worker(msg: func.QueueMessage) -> None:
    """Re-read, enrich and write back one ticket (ServiceNow or Dataverse)."""
    # The bytes as received: the service decodes strictly, and a poisoned message carries the
    # sha256 of exactly what arrived.
    # The message id names the job in its trace (the span continues the webhook's trace).
    services.get().process_job(
        msg.get_body(), dequeue_count=msg.dequeue_count or 1, job_id=msg.id or None
    )
