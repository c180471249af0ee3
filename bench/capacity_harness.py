"""The instance under test of ``bench.bench_capacity``: one wired service on the simulator.

``Bench`` wires a real ``Service``, ``ServiceNowConnector``, ``Pipeline`` and enrichers against
the ServiceNow simulator, with claim and replay stores that count their calls; ``deliver`` and
``signed_request`` call the real webhook function as the business rule would. ``child_memory``
is the fresh process ``bench_capacity`` starts to measure one cold instance's memory.
"""

from __future__ import annotations

import contextlib
import json
import resource
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import azure.functions as func

import function_app
from connectors.queue import InMemoryJobQueue
from connectors.servicenow import ServiceNowConnector
from connectors.state import Claim, MemoryClaimStore, MemoryReplayGuard
from domain.mapping import load_mapping
from domain.settings import HttpSettings, ServiceNowSettings, Settings, WebhookSettings
from enrichers import default_enrichers
from tests.simulators.servicenow import ServiceNowSimulator
from triage.inbound import sign
from triage.pipeline import Pipeline
from triage.service import Service

SECRET = "bench-capacity-secret"  # noqa: S105 - a throwaway key for a loopback benchmark
CLIENT = ("bench-capacity", "bench-capacity-secret-0123456789")
INTEGRATION_USER = "svc_ticket_enricher"
TEXTS = [
    ("VPN down", "The VPN is down for all users in store {n}, nobody can work. Please help asap!"),
    ("Printer jam", "The printer on floor {n} keeps jamming, customers are waiting. Urgent."),
    ("Password reset", "My account is locked and I cannot work, please reset it asap ({n})."),
    (
        "",
        "Hi team,\n\nOutlook does not sync my mailbox since 08:00, ref {n}.\n\nBest regards\nAnna",
    ),
    ("Kassen", "Alle kasser i butik {n} er nede, ingen kan betale. Det haster!"),
    ("Konto låst", "Min konto er blevet låst efter ferien, jeg kan ikke arbejde. Bruger {n}."),
    ("DNS", "DNS does not resolve the intranet from branch {n}, all users are affected."),
    ("question", "Can you call me back about the thing we discussed? ({n})"),
]


class _Out:
    value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


class CountingClaims(MemoryClaimStore):
    """The memory claim store, counting calls: each is one Table Storage operation when the
    claim row is free (insert / replace / delete) and two or three when it is not."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def claim(self, key: str, *, lease_s: float) -> Claim:
        """Count, then claim."""
        self.calls["claim"] += 1
        return super().claim(key, lease_s=lease_s)

    def complete(self, claim: Claim, outcome: str) -> None:
        """Count, then complete."""
        self.calls["complete"] += 1
        super().complete(claim, outcome)

    def hold(self, claim: Claim, settle_s: float) -> None:
        """Count, then hold."""
        self.calls["hold"] += 1
        super().hold(claim, settle_s)

    def release(self, claim: Claim) -> None:
        """Count, then release."""
        self.calls["release"] += 1
        super().release(claim)


class CountingReplay(MemoryReplayGuard):
    """The memory replay guard, counting ``first_use`` (one Table insert each)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def first_use(self, key: str, *, expires_at: float) -> bool:
        """Count, then remember."""
        self.calls += 1
        return super().first_use(key, expires_at=expires_at)


def small_model() -> Any:
    """A category model trained on 400 synthetic tickets (about a second)."""
    from tests.learn import make_tickets
    from triage.learn.train import train_model

    rows = make_tickets(400, seed=1)
    texts = [f"{r['title']}\n{r['body']}" for r in rows]
    return train_model(texts, {"category": [r["category"] for r in rows]})


def signed_request(event: dict[str, Any]) -> func.HttpRequest:
    """``event`` signed as the business rule signs it."""
    body = json.dumps(event).encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Triage-Timestamp": str(stamp),
        "X-Triage-Signature": sign(body, SECRET.encode(), stamp),
    }
    return func.HttpRequest(
        method="POST", url="/api/servicenow/webhook", headers=headers, body=body
    )


def deliver(req: func.HttpRequest) -> str:
    """One call of the webhook function; returns the job it queued."""
    out = _Out()
    resp = function_app.servicenow_webhook(req, out)
    if resp.status_code != 202 or out.value is None:
        raise RuntimeError(f"webhook refused: {resp.status_code}")
    return out.value


class Bench:
    """One simulator and one wired service, as on one instance."""

    def __init__(self, sim: ServiceNowSimulator | None, model: Any = None, url: str = "") -> None:
        self.sim: ServiceNowSimulator = sim  # type: ignore[assignment]  # None: a child's
        self.claims, self.replay = CountingClaims(), CountingReplay()
        sn = ServiceNowSettings(
            instance_url=url or self.sim.url, auth="oauth", client_id=CLIENT[0],
            client_secret=CLIENT[1],
        )  # fmt: skip
        http = HttpSettings()
        self.connector = ServiceNowConnector(sn, http)
        mapping = load_mapping()
        enrichers = default_enrichers(mapping, model=model)
        pipeline = Pipeline(self.connector, mapping, enrichers, claims=self.claims)
        settings = Settings(servicenow=sn, http=http, webhook=WebhookSettings(secret=SECRET))
        queue = InMemoryJobQueue()
        self.service = Service(settings, pipeline, queue, queue, replay=self.replay)
        self.made = 0

    def new_tickets(self, count: int) -> list[str]:
        """``count`` new incidents, created by a person, with varied texts."""
        out = []
        for _ in range(count):
            title, body = TEXTS[self.made % len(TEXTS)]
            fields = {"short_description": title, "description": body.format(n=self.made)}
            out.append(self.sim.add_record("incident", fields, user="anna.b"))
            self.made += 1
        return out

    def webhook(self, sys_id: str) -> str:
        """What the business rule sends, through the function; returns the queued job."""
        rec = self.sim.get_record("incident", sys_id) or {}
        return deliver(signed_request(
            {"sys_id": sys_id, "table": "incident", "number": rec.get("number"),
             "sys_updated_by": rec.get("sys_updated_by"),
             "sys_mod_count": int(rec.get("sys_mod_count") or 0)}
        ))  # fmt: skip

    @staticmethod
    def work(message: str) -> None:
        """One queue-triggered invocation of the worker."""
        function_app.enrich_worker(func.QueueMessage(id="bench", body=message.encode()))

    def noted(self, sys_ids: Sequence[str]) -> int:
        """How many of ``sys_ids`` carry a work note (were enriched)."""
        return sum(1 for s in sys_ids if self.sim.journal(s, "work_notes"))


def rss_mb() -> float:
    """Peak resident set of this process, MB. Linux keeps ``ru_maxrss`` across exec (a child
    would report its parent's peak), so the process's own high-water mark, VmHWM, comes first."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def child_memory(url: str, ids: list[str], model_dir: str | None) -> dict[str, Any]:
    """In a fresh process (one cold instance): peak RSS after import, build and ``ids``
    enriched, and what tracemalloc sees of building the service (+ loading the model)."""
    out: dict[str, Any] = {"rss_after_import_function_app_mb": rss_mb()}
    tracemalloc.start()
    model = None
    if model_dir:
        from triage.model_store import load_model

        model = load_model(model_dir)
    bench = Bench(None, model, url=url)
    function_app.services.override(bench.service)
    out["service_objects_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 3)
    out["rss_after_build_mb"] = rss_mb()
    tracemalloc.reset_peak()
    for sys_id in ids:
        bench.work(deliver(signed_request({"sys_id": sys_id, "table": "incident"})))
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.update(
        tickets=len(ids),
        traced_after_tickets_mb=round(current / 1e6, 3),
        traced_peak_while_enriching_mb=round(peak / 1e6, 3),
        rss_peak_mb=rss_mb(),
    )
    return out
