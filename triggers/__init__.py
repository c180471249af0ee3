"""The Azure Functions triggers, one blueprint per concern; ``function_app.py`` registers them.

They only convert between Azure Functions types and ``triage.service.Service`` calls. The
service is built once per worker by ``services`` (tests ``override`` it).
"""

from __future__ import annotations

import json

import azure.functions as func

from triage.runtime import watched_provider

__all__ = ["JSON", "misconfigured", "services"]

services = watched_provider()
JSON = "application/json"


def misconfigured() -> func.HttpResponse:
    """503 for a request that arrives while the settings are broken (never the details)."""
    body = {"error": {"code": "not_configured", "message": "the service is misconfigured"}}
    return func.HttpResponse(json.dumps(body), status_code=503, mimetype=JSON)
