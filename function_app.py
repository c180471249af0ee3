"""Azure Functions entry point: registers the trigger blueprints of ``triggers/``, nothing else."""

from __future__ import annotations

import logging
import os

import azure.functions as func

from triage.telemetry import configure as configure_telemetry
from triggers import backfill, health, preview, services, upkeep, webhooks, worker
from triggers.backfill import backfill_status, backfill_submit, backfill_worker, backfills
from triggers.health import health_check
from triggers.preview import ticket_preview
from triggers.upkeep import state_cleanup
from triggers.webhooks import dynamics_webhook, servicenow_webhook
from triggers.worker import enrich_worker

__all__ = [
    "app",
    "backfill_status",
    "backfill_submit",
    "backfill_worker",
    "backfills",
    "dynamics_webhook",
    "enrich_worker",
    "health_check",
    "servicenow_webhook",
    "services",
    "state_cleanup",
    "ticket_preview",
]

# Azure Monitor only with APPLICATIONINSIGHTS_CONNECTION_STRING; otherwise nothing is imported.
configure_telemetry()
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
# The backfill timer is registered only when ENRICH_BACKFILL__SCHEDULE is set at indexing.
for blueprint in (
    webhooks.bp,
    worker.bp,
    upkeep.bp,
    preview.bp,
    health.bp,
    *backfill.blueprints(os.environ),
):
    app.register_functions(blueprint)
logging.getLogger("azure").setLevel(logging.WARNING)
logging.getLogger("msal").setLevel(logging.WARNING)
