"""The health probes of the running service (``triage.health`` evaluates them).

One cheap authenticated read per configured platform answers both ``token`` and
``platform``: ServiceNow ``GET sys_user?user_name=<integration user>&sysparm_limit=1``,
Dataverse one row of the mapped table (``$top=1``). An ``AuthError`` means the token (or basic
credentials) was refused; any other error means the platform was not reached.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from domain.errors import AuthError, ConfigError, ThrottledError
from triage.health import Check, Probe, Status, short_reason
from triage.jobs import JOBS_QUEUE

if TYPE_CHECKING:
    from triage.pipeline import Pipeline
    from triage.service import Service

__all__ = ["BACKLOG_DEGRADED", "QUEUE_NAMES", "QueueReader", "probes_for", "service_probes"]

#: The queues whose depth the health check reports (the backfill's name is a literal here
#: to keep its package unimported; tests hold it to ``triage.backfill.spec.BACKFILL_QUEUE``).
QUEUE_NAMES = (JOBS_QUEUE, f"{JOBS_QUEUE}-poison", "enrich-backfill", "enrich-backfill-poison")
#: More jobs waiting than this: degraded (the worker is falling behind or throttled).
BACKLOG_DEGRADED = 1000
_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,100}")

QueueReader = Callable[[], Mapping[str, int]]
_ORDER: tuple[Status, ...] = ("ok", "degraded", "failing")


class _PlatformRead:
    """One authenticated read per evaluation, shared by the token and platform probes."""

    def __init__(self, pipeline: Pipeline, clock: Callable[[], float]) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._lock = threading.Lock()
        self._done = False
        self.error: Exception | None = None
        self.latency_ms = 0.0

    def run(self) -> _PlatformRead:
        with self._lock:
            if not self._done:
                started = self._clock()
                try:
                    _cheap_read(self._pipeline)
                except Exception as exc:
                    self.error = exc
                self.latency_ms = round((self._clock() - started) * 1000.0, 1)
                self._done = True
        return self


def _cheap_read(pipeline: Pipeline) -> None:
    connector: Any = pipeline.connector
    mapping = pipeline.mapping
    if mapping.system == "servicenow":
        user = mapping.integration_user or ""
        query = f"user_name={user}^ORDERBYsys_id" if _USER_NAME.fullmatch(user) else "ORDERBYsys_id"
        connector.read_page("sys_user", query, ["sys_id"], limit=1)
    else:
        connector.read_page(mapping.table, "", [f"{mapping.table}id"], limit=1)


def service_probes(
    service: Service,
    queues: QueueReader | None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Probe]:
    """The six probes for ``service``; ``queues`` None: Storage is not configured."""
    pipelines = [service.pipeline, *service.others.values()]
    reads: dict[str, _PlatformRead] = {p.mapping.system: _PlatformRead(p, clock) for p in pipelines}

    def configuration() -> Check:
        settings = service.settings
        return Check(
            "ok",
            {
                "platforms": sorted(reads),
                "dry_run": settings.dry_run,
                "shadow_mode": settings.shadow_mode,
            },
        )

    def mapping() -> Check:
        return Check(
            "ok",
            {
                p.mapping.system: {
                    "version": p.mapping.version,
                    "fingerprint": p.mapping.fingerprint,
                }
                for p in pipelines
            },
        )

    def model() -> Check:
        return Check("ok", {p.mapping.system: p.model_version or None for p in pipelines})

    def token() -> Check:
        return _token_check(reads)

    def platform() -> Check:
        return _platform_check(reads)

    def queue_depths() -> Check:
        if queues is None:
            return Check("failing", {"reason": "Storage is not configured"})
        depths = dict(queues())
        poisoned = sum(n for name, n in depths.items() if name.endswith("-poison"))
        backlog = depths.get(JOBS_QUEUE, 0)
        status: Status = "degraded" if poisoned or backlog > BACKLOG_DEGRADED else "ok"
        return Check(status, {"depths": depths})

    return {
        "configuration": configuration,
        "mapping": mapping,
        "model": model,
        "token": token,
        "platform": platform,
        "queues": queue_depths,
    }


def _token_check(reads: Mapping[str, _PlatformRead]) -> Check:
    detail: dict[str, Any] = {}
    verdicts: list[Status] = ["ok"]
    for system, read in reads.items():
        error = read.run().error
        if error is None:
            detail[system] = "acquired"
        elif isinstance(error, AuthError):
            detail[system] = f"refused: {short_reason(error)}"
            verdicts.append("failing")
        else:  # the platform was not reached: the token could not be tried
            detail[system] = "not checked: platform unreachable"
            verdicts.append("degraded")
    return Check(max(verdicts, key=_ORDER.index), detail)


def _platform_check(reads: Mapping[str, _PlatformRead]) -> Check:
    detail: dict[str, Any] = {}
    verdicts: list[Status] = ["ok"]
    for system, read in reads.items():
        error = read.run().error
        item: dict[str, Any] = {"reachable": error is None, "latency_ms": read.latency_ms}
        if isinstance(error, ThrottledError | AuthError):  # it answered: reached
            item.update(reachable=True, reason=short_reason(error))
            verdicts.append("degraded" if isinstance(error, ThrottledError) else "failing")
        elif error is not None:
            item["reason"] = short_reason(error)
            verdicts.append("failing")
        detail[system] = item
    return Check(max(verdicts, key=_ORDER.index), detail)


def probes_for(
    get_service: Callable[[], Service],
    queue_reader: Callable[[Service], QueueReader | None],
) -> Callable[[], Mapping[str, Probe]]:
    """Probe sets built per evaluation; broken settings fail ``configuration`` only."""

    def probes() -> Mapping[str, Probe]:
        try:
            service = get_service()
        except ConfigError as exc:
            reason = short_reason(exc)
            return {"configuration": lambda: Check("failing", {"reason": reason})}
        return service_probes(service, queue_reader(service))

    return probes


def storage_queue_reader(
    env: Mapping[str, str], names: Sequence[str] = QUEUE_NAMES
) -> Callable[[Service], QueueReader | None]:
    """Queue depths from the service's Storage connection, built once (None without one)."""
    built: dict[str, QueueReader | None] = {}

    def reader(service: Service) -> QueueReader | None:
        setting = service.settings.queue.connection_setting
        if setting not in built:
            from connectors.queue_depth import QueueDepths

            try:
                built[setting] = QueueDepths.from_settings(env, setting, names).read
            except ConfigError:
                built[setting] = None
        return built[setting]

    return reader
