"""Azure Functions entry point: triggers only. The logic lives in triage.service."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from domain.errors import ConfigError
from triage.jobs import JOBS_QUEUE
from triage.runtime import ServiceProvider

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
services = ServiceProvider()
logging.getLogger("azure").setLevel(logging.WARNING)
logging.getLogger("msal").setLevel(logging.WARNING)
log = logging.getLogger(__name__)


# ANONYMOUS at the host: the HMAC signature over timestamp and body authenticates the caller
# (triage/inbound.py); a function key would be a second, static secret with no added value.
@app.function_name("servicenow_webhook")
@app.route(route="servicenow/webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(arg_name="out", queue_name=JOBS_QUEUE, connection="AzureWebJobsStorage")
def servicenow_webhook(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    """Authenticate, validate, enqueue; answer 202 fast."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        body = {"error": {"code": "not_configured", "message": "the service is misconfigured"}}
        return func.HttpResponse(json.dumps(body), status_code=503, mimetype="application/json")
    reply = service.accept_servicenow_webhook(req.get_body(), dict(req.headers))
    if reply.job is not None:
        out.set(reply.job.to_message())
    return func.HttpResponse(
        json.dumps(reply.body), status_code=reply.status, mimetype="application/json"
    )


@app.function_name("enrich_worker")
@app.queue_trigger(arg_name="msg", queue_name=JOBS_QUEUE, connection="AzureWebJobsStorage")
def enrich_worker(msg: func.QueueMessage) -> None:
    """Re-read, enrich and write back one ticket; transient errors raise for a host retry."""
    # The bytes as received: the service decodes strictly, and a poisoned message carries the
    # sha256 of exactly what arrived.
    services.get().process_job(msg.get_body(), dequeue_count=msg.dequeue_count or 1)


@app.function_name("state_cleanup")
@app.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False)
def state_cleanup(timer: func.TimerRequest) -> None:
    """Hourly: forget expired webhook replay keys and week-old job claims (Table Storage)."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return
    service.purge_state()
