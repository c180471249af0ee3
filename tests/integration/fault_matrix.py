"""The fault matrix: the whole slice against a misbehaving ServiceNow, with the invariants counted.

A small model of the Functions host drives real ``Service`` objects (one per "instance", all
sharing one claim store, as the deployed app shares Table Storage): signed webhooks in, a
Storage-queue model with visibility delays, redelivery after a raised invocation (30 s, up to
5 dequeues, then poison), ``batchSize`` concurrent invocations per round. The simulator injects
one fault family per scenario; afterwards every ticket is counted:

* **lost**: no note of ours with the ticket's input hash, and the job is not in the poison queue
  with a reason (a ticket we should have filled and silently did not);
* **duplicate notes**: notes of ours with the same input hash beyond the first;
* **overwritten human values**: fields a person set (before or during our work) that no longer
  hold the person's value at the end.

The host model (queue, redelivery, poison, fake time vs the simulator's real-time late commits)
is platform-neutral and lives in ``tests/integration/host_model.py``; this module is the
ServiceNow world on top of it (``fault_matrix_dataverse.py`` is the Dataverse one).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from connectors.servicenow import ServiceNowConnector
from connectors.state import ClaimStore, MemoryClaimStore, MemoryReplayGuard, ReplayGuard
from domain.mapping import load_mapping
from domain.models import Ticket
from domain.settings import HttpSettings, ServiceNowSettings, Settings, WebhookSettings
from enrichers import default_enrichers
from tests.integration.host_model import Host, Outcome
from tests.simulators import FakeClock
from tests.simulators.servicenow import RateLimitRule, ServiceNowSimulator
from triage.inbound import sign
from triage.pipeline import Pipeline, input_hash, note_marker
from triage.service import Service

__all__ = ["CLIENT", "INTEGRATION_USER", "SCENARIOS", "Matrix", "Outcome", "run_scenario"]

SECRET = "fault-matrix-secret"
CLIENT = ("enricher-client", "enricher-client-secret")
INTEGRATION_USER = "svc_ticket_enricher"
PERSON = "anna.b"
READ_TIMEOUT_S = 0.25
LATE_S = 0.5  # a late commit: longer than the read timeout
FAULT_ROUNDS = 12  # delivery rounds with faults injected; calm afterwards
SCENARIOS = (
    "5xx_bursts",
    "dropped_connections",
    "late_commit_after_timeout",
    "commit_after_redelivered_read",
    "429_retry_after",
    "429_reset_only",
    "429_no_hint",
    "token_expiry",
    "duplicate_delivery",
    "person_edit_between_read_and_write",
    "everything_at_once",
)


def ticket_text(i: int) -> dict[str, str]:
    """A new ticket our enrichers fill (category, impact, urgency, summary), distinct per i."""
    return {
        "short_description": "",
        "description": (
            f"Hi team,\n\nThe VPN is down for all users in store {i} since 08:00, nobody can "
            "work. Please help asap!\n\nBest regards\nAnna Berg\nStore manager"
        ),
    }


class Matrix(Host):
    """One scenario's world: simulator, fake clock, host queue, N service instances."""

    def __init__(
        self,
        sim: ServiceNowSimulator,
        clock: FakeClock,
        *,
        instances: int = 2,
        claims: Callable[[], ClaimStore] | None = None,
        replay: Callable[[], ReplayGuard] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(clock, seed=seed)
        self.sim = sim
        shared_claims = MemoryClaimStore(now=clock.now)
        shared_replay = MemoryReplayGuard(now=clock.now)
        self.services = [
            self._service(
                claims() if claims else shared_claims, replay() if replay else shared_replay
            )
            for _ in range(instances)
        ]
        self.person_values: dict[str, dict[str, str]] = {}
        self.markers: dict[str, str] = {}  # sys_id -> the note marker of its input

    def _service(self, claims: ClaimStore, replay: ReplayGuard) -> Service:
        def sleep(seconds: float) -> None:
            self.clock.advance(seconds)

        sn = ServiceNowSettings(
            instance_url=self.sim.url, auth="oauth", client_id=CLIENT[0], client_secret=CLIENT[1]
        )
        http = HttpSettings(
            read_timeout_s=READ_TIMEOUT_S, connect_timeout_s=1.0, backoff_initial_s=0.1,
            backoff_max_s=2.0,
        )  # fmt: skip
        connector = ServiceNowConnector(
            sn, http, sleep=sleep, now=self.clock.now, monotonic=self.clock.now
        )
        mapping = load_mapping()
        pipeline = Pipeline(connector, mapping, default_enrichers(mapping), claims=claims)
        settings = Settings(servicenow=sn, http=http, webhook=WebhookSettings(secret=SECRET))
        return Service(
            settings, pipeline, self.queue, self.poison, replay=replay, now=self.clock.now
        )

    def close(self) -> None:
        for service in self.services:
            service.pipeline.connector.close()  # type: ignore[attr-defined]

    # ---- tickets and webhooks ----------------------------------------------------------------

    def new_ticket(self, i: int, *, person_impact: bool) -> str:
        fields = ticket_text(i)
        if person_impact:  # a person already chose impact: it must survive everything
            fields["impact"] = "2"
        sys_id = self.sim.add_record("incident", fields, user=PERSON)
        text = Ticket(title=fields["short_description"], description=fields["description"])
        self.markers[sys_id] = note_marker(input_hash(text))
        if person_impact:
            self.person_values[sys_id] = {"impact": "2"}
        return sys_id

    def webhook(self, sys_id: str, *, copies: int = 1) -> None:
        rec = self.sim.get_record("incident", sys_id) or {}
        body = json.dumps(
            {"sys_id": sys_id, "table": "incident", "number": rec.get("number"),
             "sys_updated_by": rec.get("sys_updated_by"),
             "sys_mod_count": int(rec.get("sys_mod_count") or 0)}
        ).encode()  # fmt: skip
        stamp = int(self.clock.now())
        headers = {
            "Content-Type": "application/json",
            "X-Triage-Timestamp": str(stamp),
            "X-Triage-Signature": sign(body, SECRET.encode(), stamp),
        }
        reply = self.services[0].accept_servicenow_webhook(body, headers)
        if reply.job is None:
            raise AssertionError(f"webhook refused: {reply.status} {reply.body}")
        for _ in range(copies):  # duplicate delivery: the same job handed out more than once
            self.queue.send(reply.job.to_message())

    def edit_between_read_and_write(self, sys_ids: set[str]) -> None:
        """On our first PATCH of each ticket, a person sets category first (a forced race)."""
        pending = set(sys_ids)
        lock = threading.Lock()

        def person(table: str, sys_id: str, body: dict[str, Any]) -> None:
            with lock:
                if sys_id not in pending or "work_notes" not in body:
                    return
                pending.discard(sys_id)
            self.sim.update_record(table, sys_id, {"category": "hardware"}, user=PERSON)
            with self._lock:
                self.person_values.setdefault(sys_id, {})["category"] = "hardware"

        self.sim.before_write(person)

    # ---- the host ----------------------------------------------------------------------------

    def settle(self) -> None:
        """Late commits land before the host's clock jumps past them."""
        self.sim.wait_idle(10.0)

    # ---- counting ----------------------------------------------------------------------------

    def count(self, scenario: str, sys_ids: list[str]) -> Outcome:
        self.sim.wait_idle(10.0)
        outcome = Outcome(scenario, len(sys_ids), invocations=self.invocations, raised=self.raised)
        poisoned = self.poisoned_records()
        outcome.poisoned = len(self.poison.messages)
        for sys_id in sys_ids:
            rec = self.sim.get_record("incident", sys_id) or {}
            marker = self.markers[sys_id]
            notes = [n["value"] for n in self.sim.journal(sys_id, "work_notes")]
            ours = [n for n in notes if marker in n]
            outcome.notes[sys_id] = len(ours)
            if not ours and sys_id not in poisoned:
                outcome.lost += 1
            outcome.duplicate_notes += max(0, len(ours) - 1)
            restores = sum("their value is kept" in n for n in notes)
            outcome.conflicts_restored += min(restores, 1)
            outcome.duplicate_notes += max(0, restores - 1)  # one restore note per race
            for name, value in self.person_values.get(sys_id, {}).items():
                outcome.overwritten_human_values += rec.get(name) != value
        log = self.sim.request_log
        outcome.throttled = sum(1 for r in log if r.status == 429)
        outcome.failed_writes = sum(
            1 for r in log if r.method == "PATCH" and (r.status == 0 or r.status >= 500)
        )
        return outcome


# ---- the scenarios ---------------------------------------------------------------------------


def run_scenario(
    scenario: str,
    sim: ServiceNowSimulator,
    clock: FakeClock,
    *,
    tickets: int,
    seed: int = 0,
    claims: Callable[[], ClaimStore] | None = None,
) -> Outcome:
    """Create ``tickets`` new incidents, deliver their webhooks under ``scenario``, count."""
    matrix = Matrix(sim, clock, claims=claims, seed=seed)
    try:
        rnd = matrix.random
        sys_ids = [matrix.new_ticket(i, person_impact=i % 3 == 0) for i in range(tickets)]
        everything = scenario == "everything_at_once"
        copies = 2 if scenario == "duplicate_delivery" or everything else 1
        if scenario == "person_edit_between_read_and_write" or everything:
            matrix.edit_between_read_and_write(set(sys_ids[::2]))
        rules = {"429_retry_after": "retry_after", "429_reset_only": "reset_only",
                 "429_no_hint": "none"}  # fmt: skip
        if scenario in rules:
            sim.set_rate_limit(RateLimitRule(limit=max(8, tickets), mode=rules[scenario]))  # type: ignore[arg-type]
        for sys_id in sys_ids:
            matrix.webhook(sys_id, copies=copies)

        def inject(m: Matrix, round_no: int) -> None:
            # Bursts, then calm: faults injected every round forever would (rightly) poison
            # the last jobs after five failed deliveries; a burst must be ridden out.
            if round_no == FAULT_ROUNDS:
                sim.reset_faults()
            if round_no >= FAULT_ROUNDS:
                return
            # Bursts on any request (reads retry in process), and on writes in particular.
            if scenario in ("5xx_bursts",) or (everything and round_no % 4 == 0):
                status = rnd.choice([500, 502, 503])
                sim.fail_next(rnd.randint(1, 4), status=status)
                sim.refuse_writes(rnd.randint(0, 2), status=status)
            if scenario == "dropped_connections" or (everything and round_no % 4 == 1):
                sim.drop_next(rnd.randint(1, 3))
                sim.drop_writes(rnd.randint(0, 1))
                sim.commit_then_drop(rnd.randint(0, 1))
            if scenario == "late_commit_after_timeout" or (everything and round_no % 4 == 2):
                sim.commit_then_delay(1, LATE_S)
            if scenario == "commit_after_redelivered_read" or (everything and round_no % 4 == 3):
                sim.delay_then_commit(1, LATE_S)
            if scenario == "token_expiry" or everything:
                sim.expire_tokens()

        matrix.run(inject)
        sim.reset_faults()
        sim.before_write(None)
        sim.set_rate_limit(None)
        return matrix.count(scenario, sys_ids)
    finally:
        matrix.close()
