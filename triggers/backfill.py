"""Backfill triggers: the window worker, the HTTP API and the optional scheduled run.

They only convert between Azure Functions types and ``triage.backfill`` calls. The backfill
service is built on first use by ``backfills``, apart from the live service, so a broken
``ENRICH_BACKFILL__*`` setting never stops the webhooks (tests ``override`` it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC

import azure.functions as func

from domain.errors import ConfigError
from domain.settings import ncrontab_problem
from triage.backfill.api import status_call, submit_call
from triage.backfill.service import BackfillProvider
from triage.backfill.spec import BACKFILL_QUEUE
from triage.replies import WebhookReply
from triggers import JSON, misconfigured

__all__ = [
    "SCHEDULE_SETTING",
    "backfill_schedule",
    "backfill_status",
    "backfill_submit",
    "backfill_worker",
    "backfills",
    "blueprints",
    "bp",
    "schedule_blueprint",
]

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)
backfills = BackfillProvider()
SCHEDULE_SETTING = "ENRICH_BACKFILL__SCHEDULE"


def _json(reply: WebhookReply) -> func.HttpResponse:
    body = json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
    return func.HttpResponse(body, status_code=reply.status, mimetype=JSON, charset="utf-8")


@bp.function_name("backfill_worker")
@bp.queue_trigger(arg_name="msg", queue_name=BACKFILL_QUEUE, connection="AzureWebJobsStorage")
def backfill_worker(msg: func.QueueMessage) -> None:
    """Carry out (part of) one window of a backfill run.

    Bad messages are poisoned by the worker; Storage failures and broken settings raise, so
    the host retries and finally moves the message to the poison queue (nothing is lost).
    """
    backfills.get().process(msg.get_body(), dequeue_count=msg.dequeue_count or 1)


# FUNCTION at the host: a function key. A run reads and writes tickets in bulk; only admins
# holding a key may start one.
@bp.function_name("backfill_submit")
@bp.route(route="backfill", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def backfill_submit(req: func.HttpRequest) -> func.HttpResponse:
    """JSON run request → 202 ``{run_id, windows, status_url}`` (windows queued), or 4xx."""
    try:
        service = backfills.get()
    except ConfigError:
        return misconfigured()  # logged by the provider, never the details to the caller
    return _json(submit_call(req.get_body(), dict(req.headers), service))


@bp.function_name("backfill_status")
@bp.route(route="backfill/{run_id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def backfill_status(req: func.HttpRequest) -> func.HttpResponse:
    """A run's state, windows by status, counts and why, failed windows with reasons."""
    try:
        service = backfills.get()
    except ConfigError:
        return misconfigured()
    return _json(status_call(req.route_params.get("run_id", ""), service))


def backfill_schedule(timer: func.TimerRequest) -> None:
    """The scheduled run over the last ``schedule_lookback_hours``, per configured platform.

    Registered only when ``ENRICH_BACKFILL__SCHEDULE`` is set (``schedule_blueprint``). The
    run id comes from the minute it fires in, so a repeated firing starts no second run.
    """
    try:
        service = backfills.get()
    except ConfigError:
        return  # logged by the provider; a timer has nobody to answer
    if timer.past_due:
        log.info("scheduled backfill is past due; starting it now")
    service.start_scheduled(service.now().astimezone(UTC))


def schedule_blueprint(schedule: str) -> func.Blueprint | None:
    """A blueprint with the timer ``backfill_schedule``, or None without a (valid) schedule.

    The trigger's schedule is ``%ENRICH_BACKFILL__SCHEDULE%``, which the host resolves at
    indexing; an unresolvable or malformed one would break the host's indexing of every
    function, so a missing setting registers no timer and a malformed one is logged instead.
    """
    text = schedule.strip()
    if not text:
        return None
    problem = ncrontab_problem(text)
    if problem is not None:
        log.error("%s %s: no scheduled backfill", SCHEDULE_SETTING, problem)
        return None
    timer_bp = func.Blueprint()  # type: ignore[no-untyped-call]
    trigger = timer_bp.timer_trigger(
        arg_name="timer", schedule=f"%{SCHEDULE_SETTING}%", run_on_startup=False
    )
    timer_bp.function_name("backfill_schedule")(trigger(backfill_schedule))
    return timer_bp


def blueprints(env: Mapping[str, str]) -> list[func.Blueprint]:
    """The backfill blueprints to register: the worker and API, and the timer if scheduled."""
    scheduled = schedule_blueprint(env.get(SCHEDULE_SETTING, ""))
    return [bp] if scheduled is None else [bp, scheduled]
