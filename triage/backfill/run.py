"""Start, carry out and look at backfill runs: locally (the CLI) or fanned out (the app).

``plan_run`` cuts the spec's range into windows and records the run with them (idempotent:
planning the same run id again adds nothing, which is how a killed CLI run resumes).
``submit`` then puts one message per window on the backfill queue, where ``BackfillWorker``
(the queue trigger's service) carries each out with a ``WindowRunner`` and re-queues it with a
visibility delay while it must wait. ``run_local`` does the same in one process, window after
window, for the CLI.

What ends in the poison queue: a malformed message, a run or platform that does not exist
here, a window that failed permanently (its reason is also in the run's status) and a window
re-queued after transient failures more than ``max_requeues`` times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from connectors.backfill_models import RunStatus
from connectors.backfill_state import CheckpointStore
from connectors.queue import JobQueue
from domain.errors import ConfigError, ConnectorError, InboundError
from triage.backfill.engine import WindowOutcome, WindowRunner
from triage.backfill.spec import BackfillSpec, WindowJob, parse_window_job
from triage.backfill.windows import plan_windows, time_field
from triage.jobs import message_bytes, poison_message

__all__ = ["BackfillWorker", "plan_run", "run_local", "submit"]

log = logging.getLogger(__name__)

MAX_REQUEUE_DELAY_S = 3600.0


def plan_run(spec: BackfillSpec, store: CheckpointStore) -> int:
    """Record the run and its windows (pending); returns the number of windows."""
    windows = plan_windows(
        spec.since,
        spec.until,
        run_id=spec.run_id,
        field=time_field(spec.system, spec.by),
        target_tickets=spec.window_tickets,
    )
    pairs = [(w.start.isoformat(), w.end.isoformat()) for w in windows]
    store.create_run(spec.run_id, pairs, spec=spec.stored())
    return len(windows)


def submit(spec: BackfillSpec, store: CheckpointStore, queue: JobQueue) -> int:
    """Plan the run and queue one message per window; returns the number of windows."""
    count = plan_run(spec, store)
    for index in range(count):
        queue.send(WindowJob(run_id=spec.run_id, window=index).model_dump_json())
    log.info("backfill %s submitted: %d windows", spec.run_id, count)
    return count


def run_local(
    spec: BackfillSpec,
    runner: WindowRunner,
    store: CheckpointStore,
    *,
    sleep: Callable[[float], None] = time.sleep,
    max_wait_s: float = 3600.0,
) -> RunStatus:
    """Carry out every window in this process, waiting out pauses; returns the run's status.

    Windows already done (a resumed run) are skipped by their lease; a window held by a
    process that died is taken over when its lease runs out.
    """
    count = plan_run(spec, store)
    for index in range(count):
        waited = 0.0
        while True:
            outcome = runner.run(spec, index)
            if outcome.state in ("done", "failed", "missing"):
                break
            if outcome.state == "continue":
                continue
            if waited >= max_wait_s:
                log.warning("window %d still waiting after %.0f s: left pending", index, waited)
                break
            wait = min(max(outcome.retry_after_s, 0.5), 60.0)
            sleep(wait)
            waited += wait
    return store.run_status(spec.run_id)


@dataclass
class BackfillWorker:
    """The backfill queue's service: one window message per call; never raises for input."""

    store: CheckpointStore
    runner_for: Callable[[str], WindowRunner | None]
    queue: JobQueue
    poison: JobQueue
    max_requeues: int = 50

    def process(self, message: bytes | str, *, dequeue_count: int = 1) -> WindowOutcome | None:
        """Carry out (part of) one window; re-queue it while it must wait, poison on failure.

        Storage or platform failures that keep the window from being given back raise, so the
        host retries the message (and finally poisons it).
        """
        data = message_bytes(message)
        try:
            job = parse_window_job(data)
        except InboundError as exc:
            self.poison.send(poison_message(data, f"{exc.code}: {exc}"))
            return None
        try:
            stored = self.store.run_spec(job.run_id)
            spec = BackfillSpec.from_stored(stored) if stored is not None else None
        except ConfigError as exc:
            self.poison.send(poison_message(data, f"invalid_run: {exc}"))
            return None
        if spec is None:
            self.poison.send(poison_message(data, f"unknown_run: no run {job.run_id}"))
            return None
        runner = self.runner_for(spec.system)
        if runner is None:
            reason = f"not_configured: no {spec.system} platform is configured"
            self.poison.send(poison_message(data, reason))
            return None
        outcome = runner.run(spec, job.window)
        self._follow_up(job, data, outcome)
        return outcome

    def _follow_up(self, job: WindowJob, data: bytes, outcome: WindowOutcome) -> None:
        if outcome.state == "failed" and outcome.reason:
            self.poison.send(poison_message(data, f"window_failed: {outcome.reason}"))
        elif outcome.state == "continue":
            self.queue.send(job.model_dump_json())
        elif outcome.state in ("busy", "retry"):
            requeues = job.requeues + (outcome.state == "retry")
            if requeues > self.max_requeues:
                reason = f"window_failed: still failing after {requeues} attempts: {outcome.reason}"
                self.poison.send(poison_message(data, reason))
                return
            backoff = 2.0 ** min(requeues, 12) if outcome.state == "retry" else 0.0
            delay = min(max(outcome.retry_after_s, backoff, 1.0), MAX_REQUEUE_DELAY_S)
            again = job.model_copy(update={"requeues": requeues})
            try:
                self.queue.send(again.model_dump_json(), delay_s=delay)
            except ConnectorError:
                raise  # the host retries this message; the window's checkpoint is kept
