"""Timers that keep the shared state small."""

from __future__ import annotations

import logging

import azure.functions as func

from domain.errors import ConfigError
from triggers import services

__all__ = ["bp", "state_cleanup"]

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger(__name__)


@bp.function_name("state_cleanup")
@bp.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False)
def state_cleanup(timer: func.TimerRequest) -> None:
    """Hourly: forget expired webhook replay keys and week-old job claims (Table Storage)."""
    try:
        service = services.get()
    except ConfigError as exc:
        log.debug("not configured: %s", exc)  # the service provider logged it once
        return
    service.purge_state()
