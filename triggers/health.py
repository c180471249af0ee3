"""``GET /api/health``: configuration, mapping, model, token, platform and queue depths."""

from __future__ import annotations

import json
import os

import azure.functions as func

from triage.health import HealthChecker
from triage.health_probes import probes_for, storage_queue_reader
from triggers import JSON, services

__all__ = ["bp", "health_check", "override"]

bp = func.Blueprint()  # type: ignore[no-untyped-call]

_default = HealthChecker(probes_for(services.get, storage_queue_reader(os.environ)))
_checker: HealthChecker = _default


def override(checker: HealthChecker | None) -> None:
    """Use ``checker`` from now on (``None``: the one built on the app's service)."""
    global _checker
    _checker = checker if checker is not None else _default


# FUNCTION at the host: a function key. The report names versions and queue depths, and each
# uncached call makes one read per platform (cached for a few seconds).
@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_check(req: func.HttpRequest) -> func.HttpResponse:
    """``{"status": ok|degraded|failing, "checks": {...}}``: 200, or 503 when failing."""
    report = _checker.report()
    body = json.dumps(report.as_json()).encode("utf-8")
    return func.HttpResponse(body, status_code=report.http_status, mimetype=JSON, charset="utf-8")
