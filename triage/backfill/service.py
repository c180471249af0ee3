"""The backfill side of the app and the CLI, built from settings: store, runners, queue, worker.

``BackfillService`` holds what a backfill needs, every collaborator passed in (tests build it
from fakes); ``build_backfill_service`` builds it from app settings:

* the checkpoint store: Table Storage (``enrichbackfill``) when the Storage connection setting
  is present, else (the CLI only) a local JSON file;
* one ``WindowRunner`` per configured platform, over a pipeline built exactly as the live one
  (``triage.runtime.build_pipelines``: same mapping, enrichers, policy, claim store and shadow
  mode) but with connectors of its own, so a backfill's pacing never slows live traffic.
  ``connector_options(system)`` is the one seam where that pacing is passed to the connector
  builders;
* the backfill queue and its poison queue, and the ``BackfillWorker`` over them.

Everything is built lazily and apart from the live service (``ENRICH_BACKFILL__*`` is read
here only), so a broken backfill setting never breaks live webhooks.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from connectors.backfill_models import RunStatus
from connectors.backfill_state import CheckpointStore
from connectors.queue import JobQueue
from domain.errors import ConfigError, ConnectorError
from domain.settings import Settings
from triage.backfill.engine import WindowOutcome, WindowRunner
from triage.backfill.run import BackfillWorker, submit
from triage.backfill.spec import BACKFILL_QUEUE, BackfillSpec, new_run_id
from triage.backfill.windows import Window, plan_windows, time_field, window_query

__all__ = [
    "DEFAULT_STATE_PATH",
    "BackfillProvider",
    "BackfillService",
    "build_backfill_service",
    "connector_options",
    "scheduled_run_id",
]

log = logging.getLogger(__name__)

#: The CLI's checkpoint file when no Storage connection is configured.
DEFAULT_STATE_PATH = "backfill-state.json"
_SHORT = {"servicenow": "sn", "dataverse": "dv"}


def connector_options(system: str) -> dict[str, Any]:
    """Keyword arguments for the backfill's connector of ``system`` (its pacing).

    No shared budget: the connectors are paced like the live ones (tests, and callers that
    pace otherwise); ``build_backfill_service`` uses ``triage.backfill.pacing`` by default.
    """
    return {}


def scheduled_run_id(fired_at: datetime, system: str) -> str:
    """The scheduled run's id: the scheduled minute and the platform, never random.

    A timer that fires twice for the same minute asks for the same run, which planning and
    the windows' leases make a no-op.
    """
    moment = fired_at.astimezone(UTC)
    return f"nightly-{moment:%Y%m%d-%H%M}-{_SHORT.get(system, system)}"


@dataclass
class BackfillService:
    """Start, carry out and look at backfill runs; every collaborator is passed in."""

    settings: Settings
    store: CheckpointStore
    #: The runner of a configured platform ("servicenow", "dataverse"), else None.
    runners: Callable[[str], WindowRunner | None]
    #: The backfill queue and its poison queue; None without Storage (local runs only).
    queue: JobQueue | None = None
    poison: JobQueue | None = None
    #: The share of the platform's quota used so far, once a shared budget is wired.
    quota_used: Callable[[], float] | None = None
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _worker: BackfillWorker | None = field(default=None, init=False, repr=False)

    def systems(self) -> tuple[str, ...]:
        """The configured platforms' systems, ServiceNow first."""
        configured = (
            ("servicenow", self.settings.servicenow),
            ("dataverse", self.settings.dataverse),
        )
        return tuple(name for name, cfg in configured if cfg is not None)

    def spec(
        self,
        system: Literal["servicenow", "dataverse"],
        since: datetime,
        until: datetime,
        *,
        by: Literal["created", "updated"] = "created",
        query: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        origin: Literal["cli", "http", "timer"] = "cli",
        run_id: str | None = None,
    ) -> BackfillSpec:
        """A run's spec with the configured page and window sizes.

        ``ENRICH_DRY_RUN`` makes every run a dry run. Raises pydantic's ``ValidationError``
        for values a spec refuses (the callers turn it into their own error).
        """
        cfg = self.settings.backfill
        return BackfillSpec(
            run_id=run_id or new_run_id(self.now()),
            system=system,
            by=by,
            since=since,
            until=until,
            query=query or None,
            limit=limit,
            dry_run=dry_run or self.settings.dry_run,
            page_size=cfg.page_size,
            window_tickets=cfg.window_tickets,
            origin=origin,
        )

    def check(self, spec: BackfillSpec) -> None:
        """Refuse, before anything is stored, a run this app cannot carry out.

        ``ConfigError`` when the platform is not configured, the range is empty, or the
        admin's query (filter) could not be ANDed into a window's.
        """
        runner = self.runners(spec.system)
        if runner is None:
            raise ConfigError(f"no {spec.system} platform is configured")
        field_name = time_field(spec.system, spec.by)
        [first, *_] = plan_windows(spec.since, spec.until, field=field_name, max_windows=1)
        window = Window(spec.run_id, 0, first.start, first.end, field_name)
        window_query(window, spec.system, runner.pipeline.mapping, spec.query)

    def submit(self, spec: BackfillSpec) -> int:
        """Plan the run and queue its windows for the app; returns the number of windows."""
        if self.queue is None:
            raise ConfigError(
                f"submitting needs Storage: set the app setting "
                f"{self.settings.queue.connection_setting} (the app's connection string)"
            )
        return submit(spec, self.store, self.queue)

    def status(self, run_id: str) -> RunStatus:
        """The run's progress from the checkpoint store (``state == "missing"``: no such run)."""
        return self.store.run_status(run_id)

    def worker(self) -> BackfillWorker:
        """The backfill queue's worker (built once)."""
        if self._worker is None:
            if self.queue is None or self.poison is None:
                raise ConfigError("the backfill worker needs the Storage queues")
            self._worker = BackfillWorker(
                self.store,
                self.runners,
                self.queue,
                self.poison,
                max_requeues=self.settings.backfill.max_requeues,
            )
        return self._worker

    def process(self, message: bytes | str, *, dequeue_count: int = 1) -> WindowOutcome | None:
        """Carry out one window message (the queue trigger); see ``BackfillWorker.process``."""
        return self.worker().process(message, dequeue_count=dequeue_count)

    def start_scheduled(self, fired_at: datetime) -> list[str]:
        """Submit the scheduled run of each configured platform; returns the run ids started.

        Covers the ``schedule_lookback_hours`` before the scheduled minute, by
        ``schedule_by``. The run id comes from that minute, so a second firing for it adds
        no run. A platform that cannot be submitted is logged and the others go on.
        """
        cfg = self.settings.backfill
        until = fired_at.astimezone(UTC).replace(second=0, microsecond=0)
        since = until - timedelta(hours=cfg.schedule_lookback_hours)
        started: list[str] = []
        for system in self.systems():
            name: Literal["servicenow", "dataverse"] = (
                "servicenow" if system == "servicenow" else "dataverse"
            )
            query = cfg.query if name == "servicenow" else cfg.filter
            try:
                spec = self.spec(
                    name, since, until, by=cfg.schedule_by, query=query, origin="timer",
                    run_id=scheduled_run_id(until, name),
                )  # fmt: skip
                self.check(spec)
                windows = self.submit(spec)
            except (ConfigError, ConnectorError) as exc:
                log.error("scheduled backfill for %s not started: %s", name, exc)
                continue
            log.info("scheduled backfill %s: %d windows", spec.run_id, windows)
            started.append(spec.run_id)
        return started


def build_backfill_service(
    env: Mapping[str, str] | None = None,
    *,
    state_path: str | None = None,
    require_storage: bool = False,
    options: Callable[[str], dict[str, Any]] | None = None,
) -> BackfillService:
    """Build the backfill side from app settings (``ConfigError`` naming what is wrong).

    Storage (the app setting ``ENRICH_QUEUE__CONNECTION_SETTING`` names, ``AzureWebJobsStorage``
    by default) holds the checkpoints, the queues, the claims shared with live enrichment and
    the shadow records. Without it (the CLI only) checkpoints go to ``state_path`` (default
    ``DEFAULT_STATE_PATH``) and claims and shadow records stay in memory; ``require_storage``
    refuses that. ``state_path`` keeps checkpoints in a file even when Storage is configured.
    ``options`` replaces the connectors' pacing (default: the shared budget of
    ``triage.backfill.pacing``).
    """
    from domain.redact import Redactor, install_log_redaction, secrets_of
    from domain.settings import load_settings

    env = os.environ if env is None else env
    settings = load_settings()
    redactor = Redactor(secrets_of(settings))
    install_log_redaction(redactor)
    connection = settings.queue.connection_setting
    storage = bool(env.get(connection, "").strip()) or any(
        k.startswith(f"{connection}__") for k in env
    )
    if require_storage and not storage:
        raise ConfigError(
            f"this needs Storage: set {connection} to the app's Storage connection string"
        )
    store = _store(env, connection, state_path if state_path or storage else DEFAULT_STATE_PATH)
    queue = poison = None
    claims: Any
    records: Any = None
    if storage:
        from connectors.queue import StorageJobQueue
        from connectors.table_state import TableClaimStore

        queue = StorageJobQueue.from_settings(env, connection, BACKFILL_QUEUE)
        poison = StorageJobQueue.from_settings(env, connection, f"{BACKFILL_QUEUE}-poison")
        claims = TableClaimStore.from_settings(env, connection)
        if settings.shadow_mode or settings.decision_log:
            from connectors.shadow import TableShadowStore

            records = TableShadowStore.from_settings(env, connection)
    else:
        from connectors.shadow import MemoryShadowStore
        from connectors.state import MemoryClaimStore

        claims = MemoryClaimStore()
        records = MemoryShadowStore() if settings.shadow_mode else None

    quota_used: Callable[[], float] | None = None
    if options is None:
        from triage.backfill.pacing import BudgetWiring

        wiring = BudgetWiring(settings, env, storage, connection)
        options, quota_used = wiring.options, wiring.quota_used

    def build() -> dict[str, WindowRunner]:
        from triage.runtime import build_pipelines

        pipelines = build_pipelines(settings, claims, redactor, records, connector_options=options)
        cfg = settings.backfill
        return {
            p.mapping.system: WindowRunner(
                p, store, lease_s=cfg.lease_s, time_budget_s=cfg.time_budget_s
            )
            for p in pipelines
        }

    return BackfillService(settings, store, _LazyRunners(build), queue, poison, quota_used)


def _store(env: Mapping[str, str], connection: str, path: str | None) -> CheckpointStore:
    if path:
        from connectors.backfill_stores import FileCheckpointStore

        return FileCheckpointStore(path)
    from connectors.backfill_stores import TableCheckpointStore

    return TableCheckpointStore.from_settings(env, connection)


class _LazyRunners:
    """The runners, built on first use (connectors, mappings, models) and kept."""

    def __init__(self, build: Callable[[], Mapping[str, WindowRunner]]) -> None:
        self._build = build
        self._runners: Mapping[str, WindowRunner] | None = None
        self._lock = threading.Lock()

    def __call__(self, system: str) -> WindowRunner | None:
        with self._lock:
            if self._runners is None:
                self._runners = self._build()
            return self._runners.get(system)


class BackfillProvider:
    """Builds the app's ``BackfillService`` on first use; tests ``override`` it with fakes.

    A failed build raises its ``ConfigError`` to the caller and is tried again on the next use
    (the live service is built elsewhere and does not depend on it).
    """

    def __init__(self, factory: Callable[[], BackfillService] = build_backfill_service) -> None:
        self._factory = factory
        self._service: BackfillService | None = None
        self._lock = threading.Lock()

    def get(self) -> BackfillService:
        """The service, built on first use."""
        with self._lock:
            if self._service is None:
                try:
                    self._service = self._factory()
                except ConfigError as exc:
                    log.error("backfills cannot start: %s", exc)
                    raise
            return self._service

    def override(self, service: BackfillService | None) -> None:
        """Use ``service`` from now on (``None`` rebuilds from settings on next use)."""
        with self._lock:
            self._service = service

    def set_factory(self, factory: Callable[[], BackfillService]) -> Callable[[], BackfillService]:
        """Build with ``factory`` from now on (forgetting any built service); returns the old one."""
        with self._lock:
            old, self._factory, self._service = self._factory, factory, None
            return old
