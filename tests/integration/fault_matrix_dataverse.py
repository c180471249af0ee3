"""The fault matrix for Dynamics 365: the whole Dataverse slice against a misbehaving simulator.

The host model of ``tests/integration/host_model.py`` (queue with visibility delays, redelivery
after a raise, poison after five, ``batchSize`` concurrent invocations, fake time) drives real
``Service`` objects, two "instances" sharing one claim store, each with its own msal token cache
and HTTPS session against the Dataverse simulator (loopback TLS). Webhooks come in as the
simulator would post them (``RemoteExecutionContext`` + the key header). One fault family per
scenario, injected for ``FAULT_ROUNDS`` delivery rounds, then calm:

* ``5xx_bursts``: 500/502/503/504 on any Web API request (reads retry in process) and on
  ``$batch`` writes in particular (answered 5xx without applying);
* ``dropped_connections``: connections closed before any answer, and ``$batch`` writes that
  commit and then hang up (our write landed, its answer is lost);
* ``late_commit``: a ``$batch`` that commits only after the client's read timeout, so a
  redelivered job may re-read before it lands;
* the three service-protection 429s, from the simulator's own per-user limits (lowered):
  request count ``0x80072322``, execution time ``0x80072321``, concurrency ``0x80072326``, each
  with ``Retry-After``;
* ``token_expiry``: every issued token revoked each round (401 → token refreshed once);
* ``duplicate_delivery``: every job queued twice;
* ``person_edit_412``: on our first write of half the cases, a person sets ``prioritycode``
  first; our change set's ``If-Match`` gets 412, the worker re-reads and re-decides;
* ``everything_at_once``.

Afterwards every case is counted: **lost** (no annotation of ours with the case's ``input
<hash>`` and no poisoned job), **duplicate notes** (ours beyond the first), **overwritten human
values** (a ``prioritycode`` a person set, at creation or in a race, that no longer holds).
The mapping adds two custom choice columns (``new_impact``, ``new_urgency``), so a case whose
priority a person chose still gets a write and a note: every case must end with exactly one.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import requests

from connectors._msal import MsalTokenProvider
from connectors.base import SourceRecord
from connectors.dataverse import DataverseConnector
from connectors.state import ClaimStore, MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping, to_ticket
from domain.settings import DataverseSettings, HttpSettings, Settings
from enrichers import default_enrichers
from tests.integration.host_model import Host, Outcome
from tests.simulators import FakeClock, Request, Response
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_api import error
from tests.simulators.dataverse_limits import Limits
from tests.simulators.write_faults import WriteFaults
from triage.dataverse_inbound import WebhookKeys
from triage.pipeline import Pipeline, input_hash, note_marker
from triage.service import Service

__all__ = [
    "CLIENT",
    "KEY",
    "SCENARIOS",
    "THROTTLE_CODES",
    "DataverseMatrix",
    "FaultyDataverse",
    "IfMatchDropped",
    "fault_mapping",
    "run_scenario",
]

CLIENT = ("enricher-app", "enricher-app-secret-0123456789")
KEY = "fault-matrix-dataverse-key-0123456789"
PERSON_PRIORITY = 3  # Low: what a person chose; we would write High (1)
READ_TIMEOUT_S = 0.3
LATE_S = 0.6  # a late commit: longer than the read timeout
FAULT_ROUNDS = 12  # delivery rounds with faults injected; calm afterwards
SCENARIOS = (
    "5xx_bursts",
    "dropped_connections",
    "late_commit",
    "429_request_count",
    "429_execution_time",
    "429_concurrency",
    "token_expiry",
    "duplicate_delivery",
    "person_edit_412",
    "everything_at_once",
)
#: The service-protection error code each 429 scenario must provoke (dataverse.md §6).
THROTTLE_CODES = {
    "429_request_count": "0x80072322",
    "429_execution_time": "0x80072321",
    "429_concurrency": "0x80072326",
}
_THROTTLE_MESSAGES = {
    "0x80072322": "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    "0x80072321": "Combined execution time of incoming requests exceeded limit of 1,200,000 "
    "milliseconds over time window of 300 seconds.",
    "0x80072326": "Number of concurrent requests exceeded the limit of 52.",
}


def case_text(i: int) -> dict[str, str]:
    """A new case our enrichers fill (impact, urgency, priority), distinct per ``i``."""
    return {
        "title": f"VPN down in store {i}",
        "description": (
            f"Hi team,\n\nThe VPN is down for all users in store {i} since 08:00, nobody can "
            "work. Please help asap!\n\nBest regards\nAnna Berg\nStore manager"
        ),
    }


def email_html(i: int) -> str:
    """The HTML body of the e-mail a case with an empty description was created from."""
    return (
        f"<html><body><p>Hi,</p><p>All tills in store {i} are down since this morning, nobody "
        "can take payments. Urgent!</p><p>Best regards<br>Anna</p></body></html>"
    )


def fault_mapping() -> FieldMapping:
    """The default Dynamics mapping plus custom impact/urgency choice columns."""
    data = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH).model_dump()
    data["fields"] = {**data["fields"], "impact": "new_impact", "urgency": "new_urgency"}
    return FieldMapping.model_validate(data)


class FaultyDataverse(DataverseSimulator):
    """The Dataverse simulator plus staged ``$batch`` faults and a tally of the 429s served."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = WriteFaults()
        self.throttle_codes: Counter[str] = Counter()
        self.write_faults: Counter[str] = Counter()  # staged faults that reached a write
        #: Real seconds every Web API answer stays in flight (server execution time), so that
        #: concurrent requests overlap long enough for the concurrency limit to see them.
        self.execution_s = 0.0
        self._tally = threading.Lock()

    def refuse_writes(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` ``$batch`` requests with ``status``, applying nothing."""
        self.writes.stage("refuse", count, status=status)

    def commit_then_drop(self, count: int) -> None:
        """Apply the next ``count`` ``$batch`` requests, then hang up without an answer."""
        self.writes.stage("commit_then_drop", count)

    def delay_then_commit(self, count: int, delay_s: float) -> None:
        """Hold the next ``count`` ``$batch`` requests ``delay_s`` real seconds, then apply."""
        self.writes.stage("delay_then_commit", count, delay_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no staged write is still in flight (late commits have landed)."""
        return self.writes.wait_idle(timeout_s)

    def reset_faults(self) -> None:
        """Clear pending error answers, drops, latency and staged write faults."""
        super().reset_faults()
        self.writes.clear()

    def handle(self, req: Request) -> Response:
        """Apply a staged fault to a ``$batch``; tally every 429's error code."""
        path = unquote(req.path)
        is_batch = req.method == "POST" and path.endswith("/$batch")
        staged = self.writes.take() if is_batch else None
        if staged is None:
            return self._tallied(super().handle(req))
        try:
            with self._tally:
                self.write_faults[staged.kind] += 1
            if staged.kind == "refuse":
                self._record(req, path, None, staged.status)
                return error(staged.status, "", "Service Unavailable")
            if staged.kind == "delay_then_commit":
                self._stopping.wait(staged.delay_s)
            resp = super().handle(req)
            if staged.kind == "commit_then_drop":
                resp.drop = True
            return self._tallied(resp)
        finally:
            self.writes.done()

    def _tallied(self, resp: Response) -> Response:
        if self.execution_s and resp.status < 400:
            resp.hold_s = max(resp.hold_s, self.execution_s)
        if resp.status == 429 and isinstance(resp.body, dict):
            with self._tally:
                self.throttle_codes[str(resp.body.get("error", {}).get("code"))] += 1
        return resp


class IfMatchDropped(DataverseConnector):
    """The connector without its protection: writes carry ``If-Match: *`` (for the controls)."""

    def update(
        self, table: str, record_id: str, changes: Mapping[str, str], *, etag: str | None = None
    ) -> SourceRecord:
        """Write blind: the etag read is ignored, so a concurrent change is overwritten."""
        return super().update(table, record_id, changes, etag=None)


class DataverseMatrix(Host):
    """One scenario's world: simulator, fake clock, host queue, N service instances."""

    def __init__(
        self,
        sim: FaultyDataverse,
        clock: FakeClock,
        *,
        instances: int = 2,
        claims: Callable[[], ClaimStore] | None = None,
        connector: type[DataverseConnector] = DataverseConnector,
        seed: int = 0,
    ) -> None:
        super().__init__(clock, seed=seed)
        self.sim = sim
        self.mapping = fault_mapping()
        self.sessions: list[requests.Session] = []
        shared = MemoryClaimStore(now=clock.now)
        self.services = [
            self._service(claims() if claims else shared, connector) for _ in range(instances)
        ]
        self.person_values: dict[str, dict[str, int]] = {}
        self.markers: dict[str, str] = {}  # case id -> the note marker of its input
        self.raced: set[str] = set()  # cases a person edited between our read and our write

    def _service(self, claims: ClaimStore, kind: type[DataverseConnector]) -> Service:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify (requests #3829)
        session.verify = self.sim.ca_path
        self.sessions.append(session)
        settings = DataverseSettings(
            org_url=self.sim.url,
            tenant_id=self.sim.tenant,
            client_id=CLIENT[0],
            client_secret=CLIENT[1],
            authority_host=self.sim.url,
        )
        http = HttpSettings(
            read_timeout_s=READ_TIMEOUT_S, connect_timeout_s=1.0, backoff_initial_s=0.1,
            backoff_max_s=2.0,
        )  # fmt: skip
        tokens = MsalTokenProvider(
            settings, timeout=(1.0, 2.0), http_client=session, validate_authority=False
        )
        clock = self.clock
        connector = kind(
            settings, http, field_types=self.mapping.column_types(), token_provider=tokens,
            session=session, sleep=clock.advance, now=clock.now, monotonic=clock.now,
        )  # fmt: skip
        pipeline = Pipeline(connector, self.mapping, default_enrichers(self.mapping), claims=claims)
        return Service(
            Settings(http=http),
            pipeline,
            self.queue,
            self.poison,
            now=clock.now,
            dataverse_keys=WebhookKeys(keys=(KEY,)),
        )

    def close(self) -> None:
        """Close every instance's HTTP session."""
        for session in self.sessions:
            session.close()

    def settle(self) -> None:
        """Late commits land before the host's clock jumps past them."""
        self.sim.wait_idle(10.0)

    # ---- cases and webhooks --------------------------------------------------------------------

    def new_case(self, i: int, *, person_priority: bool, from_email: bool) -> str:
        """A new case; a person may have chosen its priority; it may come from an e-mail."""
        fields: dict[str, Any] = case_text(i)
        if from_email:
            fields["description"] = None
        if person_priority:
            fields["prioritycode"] = PERSON_PRIORITY
        case_id = self.sim.add_case(fields)
        if from_email:
            self.sim.add_email(case_id, email_html(i), subject=fields["title"])
            fields["description"] = email_html(i)  # what the worker reads instead
        ticket = to_ticket(fields, self.mapping, record_id=case_id)
        self.markers[case_id] = note_marker(input_hash(ticket))
        if person_priority:
            self.person_values[case_id] = {"prioritycode": PERSON_PRIORITY}
        return case_id

    def webhook(self, case_id: str, *, copies: int = 1) -> None:
        """The Create step's call, through the service; the job queued ``copies`` times."""
        headers, body = self.sim.webhook_body(case_id)
        reply = self.services[0].accept_dataverse_webhook(
            body, {**headers, "x-triage-key": KEY}, {}
        )
        if reply.job is None:
            raise AssertionError(f"webhook refused: {reply.status} {reply.body}")
        for _ in range(copies):  # duplicate delivery: the same job handed out more than once
            self.queue.send(reply.job.to_message())

    def edit_between_read_and_write(self, case_ids: set[str]) -> None:
        """On our first write of each case, a person sets ``prioritycode`` first (a race)."""
        pending = set(case_ids)
        lock = threading.Lock()

        def person(entity_set: str, record_id: str, body: dict[str, Any]) -> None:
            with lock:
                if entity_set != "incidents" or record_id not in pending:
                    return
                pending.discard(record_id)
            self.sim.update_record(record_id, {"prioritycode": PERSON_PRIORITY})
            with self._lock:
                self.person_values.setdefault(record_id, {})["prioritycode"] = PERSON_PRIORITY
                self.raced.add(record_id)

        self.sim.before_write(person)

    # ---- counting ------------------------------------------------------------------------------

    def count(self, scenario: str, case_ids: list[str]) -> Outcome:
        """Lost cases, duplicate notes and overwritten human values, plus the fault tallies."""
        self.sim.wait_idle(10.0)
        outcome = Outcome(scenario, len(case_ids), invocations=self.invocations, raised=self.raised)
        poisoned = self.poisoned_records()
        outcome.poisoned = len(self.poison.messages)
        foreign = unfilled = 0
        for case_id in case_ids:
            case = self.sim.get_case(case_id) or {}
            notes = [str(a.get("notetext") or "") for a in self.sim.annotations(case_id)]
            ours = [n for n in notes if self.markers[case_id] in n]
            foreign += len(notes) - len(ours)
            outcome.notes[case_id] = len(ours)
            if not ours and case_id not in poisoned:
                outcome.lost += 1
            outcome.duplicate_notes += max(0, len(ours) - 1)
            person = self.person_values.get(case_id, {})
            for name, value in person.items():
                outcome.overwritten_human_values += case.get(name) != value
            kept = case.get("prioritycode") == PERSON_PRIORITY
            outcome.conflicts_restored += case_id in self.raced and kept and len(ours) == 1
            unfilled += case.get("new_impact") != 1 or case.get("new_urgency") != 1
        log = self.sim.request_log
        batches = [r for r in log if r.path.endswith("/$batch")]
        outcome.throttled = sum(1 for r in log if r.status == 429)
        outcome.failed_writes = sum(1 for r in batches if r.status == 0 or r.status >= 500)
        outcome.failed_writes += self.sim.write_faults["commit_then_drop"]
        outcome.extra = {
            "races": len(self.raced),
            "foreign_notes": foreign,
            "unfilled": unfilled,
            "late_commits": self.sim.write_faults["delay_then_commit"],
            "throttle_codes": dict(sorted(self.sim.throttle_codes.items())),
            "requests": len(log),
        }
        return outcome


# ---- the scenarios -----------------------------------------------------------------------------


def _lower_limits(sim: FaultyDataverse, scenario: str, tickets: int) -> None:
    """Lower one service-protection limit so the simulator itself answers its 429s."""
    limits = sim.limits
    if scenario == "429_request_count":
        limits.requests = max(8, tickets)
    elif scenario == "429_execution_time":
        limits.cost_ms, limits.execution_ms = 2_000, 2_000 * max(8, tickets)
    elif scenario == "429_concurrency":
        limits.concurrent = 2  # eight invocations at once, each answer 50 ms in flight
        sim.execution_s = 0.05


def _restore_limits(sim: FaultyDataverse) -> None:
    defaults = Limits()
    limits = sim.limits
    limits.requests, limits.window_s = defaults.requests, defaults.window_s
    limits.execution_ms, limits.cost_ms = defaults.execution_ms, defaults.cost_ms
    limits.concurrent = defaults.concurrent
    sim.execution_s = 0.0
    sim.protection.reset()


def run_scenario(
    scenario: str,
    sim: FaultyDataverse,
    clock: FakeClock,
    *,
    tickets: int,
    seed: int = 0,
    claims: Callable[[], ClaimStore] | None = None,
    connector: type[DataverseConnector] = DataverseConnector,
) -> Outcome:
    """Create ``tickets`` new cases, deliver their webhooks under ``scenario``, count."""
    for column in ("new_impact", "new_urgency"):
        sim.set_choices(column, {1: "High", 2: "Medium", 3: "Low"})
    matrix = DataverseMatrix(sim, clock, claims=claims, connector=connector, seed=seed)
    try:
        rnd = matrix.random
        case_ids = [
            matrix.new_case(i, person_priority=i % 3 == 0, from_email=i % 4 == 1)
            for i in range(tickets)
        ]
        everything = scenario == "everything_at_once"
        copies = 2 if scenario == "duplicate_delivery" or everything else 1
        if scenario == "person_edit_412" or everything:
            matrix.edit_between_read_and_write(set(case_ids[::2]))
        for case_id in case_ids:
            matrix.webhook(case_id, copies=copies)
        _lower_limits(sim, scenario, tickets)
        codes = sorted(_THROTTLE_MESSAGES)

        def inject(m: DataverseMatrix, round_no: int) -> None:
            # Bursts, then calm: faults injected every round forever would (rightly) poison
            # the last jobs after five failed deliveries; a burst must be ridden out.
            if round_no == FAULT_ROUNDS:
                sim.reset_faults()
                _restore_limits(sim)
            if round_no >= FAULT_ROUNDS:
                return
            phase = round_no % 4
            if scenario == "5xx_bursts" or (everything and phase == 0):
                status = rnd.choice([500, 502, 503, 504])
                sim.fail_next(rnd.randint(1, 4), status=status)  # reads and writes alike
                sim.refuse_writes(rnd.randint(0, 2), status=status)
            if scenario == "dropped_connections" or (everything and phase == 1):
                sim.drop_next(rnd.randint(1, 3))
                sim.commit_then_drop(1)
            if scenario == "late_commit" or (everything and phase == 2):
                sim.delay_then_commit(1, LATE_S)
            if everything and phase == 3:  # the three 429s, each with its Retry-After
                code = codes[(round_no // 4) % len(codes)]
                wait = rnd.choice([1, 5, 120])
                sim.fail_next(2, 429, code, _THROTTLE_MESSAGES[code], retry_after_s=wait)
            if scenario == "token_expiry" or everything:
                sim.expire_tokens()

        matrix.run(inject)
        sim.reset_faults()
        sim.before_write(None)
        _restore_limits(sim)
        return matrix.count(scenario, case_ids)
    finally:
        matrix.close()
