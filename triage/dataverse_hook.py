"""The Dataverse webhook call, end to end but for the queue: key, body, loop check, job.

Dataverse posts a ``RemoteExecutionContext`` from an asynchronous PostOperation step on Create
of incident, waits at most 60 s and retries once, only on 502/503/504: so this answers fast
(202 after the job is built; the worker re-reads the case) and never with a 5xx for bad input.
Events our own application user caused (``UserId``/``InitiatingUserId`` = the systemuserid
WhoAmI returns) are acknowledged and dropped: our write must not enrich itself again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from domain.errors import InboundError
from triage.dataverse_inbound import (
    WebhookKeys,
    check_dataverse_auth,
    is_own_event,
    parse_dataverse_event,
)
from triage.jobs import EnrichJob
from triage.replies import WebhookReply, error_reply

__all__ = ["TABLES", "accept_dataverse_call"]

log = logging.getLogger(__name__)

#: The tables (logical names) whose Create events are enriched; jobs carry the logical name.
TABLES = ("incident",)


def accept_dataverse_call(
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    keys: WebhookKeys | None,
    application_user_id: str | None,
    max_bytes: int,
    now: float,
) -> WebhookReply:
    """Authenticate and validate one Dataverse webhook call; never raises for bad input."""
    if keys is None:
        log.error("no Dataverse webhook key is configured; refusing webhook calls")
        return error_reply(503, "not_configured", "the webhook key is not configured")
    try:
        if len(body) > max_bytes:  # before any work, as for ServiceNow
            raise InboundError(
                f"body is {len(body)} bytes; the limit is {max_bytes}",
                status=413,
                code="too_large",
            )
        check_dataverse_auth(headers, query, keys)
        event = parse_dataverse_event(body, headers, max_bytes=max_bytes, allowed_entities=TABLES)
    except InboundError as exc:
        log.warning("dataverse webhook refused (%s): %s", exc.status, exc)
        return error_reply(exc.status, exc.code, str(exc))
    if is_own_event(event, application_user_id):
        log.info("dataverse event for %s caused by our own update; ignored", event.record_id)
        return WebhookReply(200, {"status": "ignored", "reason": "caused by our own update"})
    job = EnrichJob(
        system="dataverse",
        table=event.entity,
        record_id=event.record_id,
        received_at=now,
    )
    return WebhookReply(202, {"status": "accepted", "record_id": event.record_id}, job)
