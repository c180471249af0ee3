"""``POST /api/preview``: what would be written to a ticket and why, touching no platform."""

from __future__ import annotations

import json
import logging

import azure.functions as func

from domain.errors import ConfigError
from triage.preview import preview_call
from triggers import JSON, misconfigured, services

__all__ = ["bp", "ticket_preview"]

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


# FUNCTION at the host: a function key; the preview reads no platform and writes nothing, but
# it runs the desk's rules and model on any text, so it is not open to everyone.
@bp.function_name("preview")
@bp.route(route="preview", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ticket_preview(req: func.HttpRequest) -> func.HttpResponse:
    """Ticket text → per field: value or null, confidence, would_write and why (200), or 4xx."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.debug("not configured: %s", exc)  # the service provider logged it once
        return misconfigured()
    reply = preview_call(req.get_body(), dict(req.headers), service.pipeline_for)
    body = json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
    return func.HttpResponse(body, status_code=reply.status, mimetype=JSON, charset="utf-8")
