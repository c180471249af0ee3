"""A ServiceNow simulator on loopback wired to a real WindowRunner, for backfill tests."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.backfill_state import MemoryCheckpointStore, RowCheckpointStore
from connectors.servicenow import ServiceNowConnector
from connectors.state import ClaimStore, MemoryClaimStore
from domain.mapping import load_mapping
from domain.settings import HttpSettings, ServiceNowSettings
from enrichers import default_enrichers
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator
from triage.backfill.engine import WindowRunner
from triage.backfill.report import ReportSink
from triage.backfill.spec import BackfillSpec
from triage.pipeline import Pipeline

USER = "svc_ticket_enricher"
CLIENT = ("enricher-client", "enricher-client-secret")
START = datetime(2024, 1, 1, tzinfo=UTC)

TEXTS = [
    ("VPN down", "The VPN is down for all users in store 12, nobody can work. Please help asap!"),
    ("Printer jam", "The printer on floor 2 keeps jamming, paper stuck in tray 3."),
    ("Password reset", "I forgot my password and my account is locked, please reset it."),
    ("Laptop broken", "My laptop screen is cracked and the keyboard does not respond."),
    ("Email not syncing", "Outlook does not sync my mailbox since this morning."),
    ("hello", "thanks"),  # nothing an enricher can be sure of
]


@dataclass
class Kit:
    sim: ServiceNowSimulator
    clock: FakeClock
    store: RowCheckpointStore
    claims: ClaimStore
    ids: list[str] = field(default_factory=list)
    connectors: list[ServiceNowConnector] = field(default_factory=list)

    def connector(self, **kwargs: Any) -> ServiceNowConnector:
        settings = ServiceNowSettings(
            instance_url=self.sim.url, auth="oauth", client_id=CLIENT[0], client_secret=CLIENT[1]
        )
        http = HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0,
                            max_attempts=2)  # fmt: skip

        def sleep(seconds: float) -> None:
            self.clock.advance(seconds)

        made = ServiceNowConnector(settings, http, sleep=sleep, now=self.clock.now,
                                   monotonic=self.clock.now, **kwargs)  # fmt: skip
        self.connectors.append(made)
        return made

    def runner(
        self,
        *,
        wrap: Callable[[ServiceNowConnector], Any] | None = None,
        report: ReportSink | None = None,
        connector_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> WindowRunner:
        mapping = load_mapping()
        connector = self.connector(**(connector_options or {}))
        pipeline = Pipeline(
            wrap(connector) if wrap else connector,
            mapping,
            default_enrichers(mapping),
            claims=self.claims,
            now=self.clock.now,
        )
        return WindowRunner(pipeline, self.store, report=report, monotonic=self.clock.now,
                            **kwargs)  # fmt: skip

    def add_tickets(self, count: int, *, days: int = 3, seed: int = 7) -> list[str]:
        rng = random.Random(seed)
        for n in range(count):
            _title, text = TEXTS[n % len(TEXTS)]
            at = START + timedelta(seconds=rng.randrange(days * 86400))
            self.ids.append(
                self.sim.add_record(
                    "incident",
                    {
                        "short_description": "",
                        "description": f"{text} (ref {n})",
                        "sys_created_on": at.strftime("%Y-%m-%d %H:%M:%S"),
                    },
                    user="anna.b",
                )
            )
        return self.ids

    def notes(self, sys_id: str) -> list[str]:
        return [row["value"] for row in self.sim.journal(sys_id, "work_notes")]

    def spec(self, run_id: str = "run-1", **overrides: Any) -> BackfillSpec:
        values: dict[str, Any] = {
            "run_id": run_id,
            "system": "servicenow",
            "since": START,
            "until": START + timedelta(days=3),
            "page_size": 40,
        }
        values.update(overrides)
        return BackfillSpec(**values)


@contextmanager
def sn_kit() -> Iterator[Kit]:
    clock = FakeClock(start=1_800_000_000.0)
    sim = ServiceNowSimulator(
        users={"anna.b": "pw"}, oauth_clients={CLIENT[0]: (CLIENT[1], USER)}, clock=clock
    )
    with sim:
        kit = Kit(sim, clock, MemoryCheckpointStore(now=clock.now),
                  MemoryClaimStore(now=clock.now))  # fmt: skip
        try:
            yield kit
        finally:
            for c in kit.connectors:
                c.close()
