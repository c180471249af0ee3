"""Inbound webhooks: authenticate, validate, enqueue, answer fast (202), never a 5xx for input."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from domain.errors import ConfigError
from triage.jobs import JOBS_QUEUE
from triage.replies import WebhookReply
from triggers import JSON, misconfigured, services

__all__ = ["bp", "dynamics_webhook", "servicenow_webhook"]

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


def _answer(reply: WebhookReply, out: func.Out[str]) -> func.HttpResponse:
    if reply.job is not None:
        out.set(reply.job.to_message())
    return func.HttpResponse(json.dumps(reply.body), status_code=reply.status, mimetype=JSON)


# ANONYMOUS at the host: the HMAC signature over timestamp and body authenticates the caller
# (triage/inbound.py); a function key would be a second, static secret with no added value.
@bp.function_name("servicenow_webhook")
@bp.route(route="servicenow/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="out", queue_name=JOBS_QUEUE, connection="AzureWebJobsStorage")
def servicenow_webhook(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    """ServiceNow business rule → job."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.debug("not configured: %s", exc)  # the service provider logged it once
        return misconfigured()
    return _answer(service.accept_servicenow_webhook(req.get_body(), dict(req.headers)), out)


# ANONYMOUS at the host: the Dataverse webhook key (a header, or `code`) is checked by us in
# constant time against the configured keys, so a rotation needs no host key change
# (triage/dataverse_inbound.py).
@bp.function_name("dynamics_webhook")
@bp.route(route="dynamics/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="out", queue_name=JOBS_QUEUE, connection="AzureWebJobsStorage")
def dynamics_webhook(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    """Dataverse step on Create of incident → job."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.debug("not configured: %s", exc)  # the service provider logged it once
        return misconfigured()
    reply = service.accept_dataverse_webhook(req.get_body(), dict(req.headers), dict(req.params))
    return _answer(reply, out)
