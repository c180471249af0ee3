"""End to end against the ServiceNow simulator: webhook → queue → worker → guarded write-back."""

from __future__ import annotations

import json

import pytest

from domain.errors import UnavailableError
from tests.integration.conftest import INTEGRATION_USER, Slice, build_slice, installed
from tests.simulators.servicenow import RateLimitRule
from triage.jobs import EnrichJob

OUTAGE = {
    "short_description": "",
    "description": (
        "Hi team,\n\nThe VPN is down for all users in store 12 since 08:00, nobody can work. "
        "Please help asap!\n\nBest regards\nAnna Berg\nStore manager"
    ),
    "caller_id": "5137153cc611227c000bbd1bd8cd2005",
}


def new_incident(app: Slice, **fields: str) -> str:
    return app.sim.add_record("incident", {**OUTAGE, **fields}, user="anna.b")


def work_notes(app: Slice, sys_id: str) -> list[str]:
    return [row["value"] for row in app.sim.journal(sys_id, "work_notes")]


def test_new_ticket_gets_filled_and_noted(app_slice: Slice) -> None:
    sys_id = new_incident(app_slice)
    assert app_slice.webhook(sys_id).status_code == 202
    assert app_slice.drain() == 1
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "network"
    assert rec["impact"] == "1"
    assert rec["urgency"] == "1"
    assert rec["priority"] == "1"  # computed by the instance from impact × urgency, not by us
    assert rec["short_description"]
    assert len(rec["short_description"]) <= 160
    assert rec["sys_updated_by"] == INTEGRATION_USER
    [note] = work_notes(app_slice, sys_id)
    assert "category = network" in note
    assert "confidence" in note
    assert app_slice.sim.invalid_choice_values() == []
    patches = [r for r in app_slice.sim.request_log if r.method == "PATCH"]
    assert len(patches) == 1
    assert "priority" not in patches[0].body


def test_fields_a_person_set_stay_untouched(app_slice: Slice) -> None:
    sys_id = new_incident(
        app_slice, category="hardware", impact="2", short_description="Store 12 VPN"
    )
    app_slice.webhook(sys_id)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert (rec["category"], rec["impact"], rec["short_description"]) == (
        "hardware",
        "2",
        "Store 12 VPN",
    )
    assert rec["urgency"] == "1"  # still unset (default 3), so it was filled


def test_our_own_write_does_not_trigger_another_enrichment(app_slice: Slice) -> None:
    # A naive business rule that fires on insert AND update calls the webhook for our PATCH too.
    app_slice.sim.on_write(lambda table, record, op, user: app_slice.webhook(record["sys_id"]))
    sys_id = new_incident(app_slice)
    app_slice.webhook(sys_id)
    assert app_slice.drain() == 2  # the original job, then the one our own write caused
    assert app_slice.pending == []
    assert len(work_notes(app_slice, sys_id)) == 1
    assert len([r for r in app_slice.sim.request_log if r.method == "PATCH"]) == 1


@pytest.mark.parametrize(
    ("mode", "window_left_s"), [("retry_after", 20), ("reset_only", 20), ("none", 1)]
)
def test_short_429_in_each_form_is_waited_out_and_retried(
    app_slice: Slice, mode: str, window_left_s: int
) -> None:
    sys_id = new_incident(app_slice)
    # One request left in this hour's window: the GET passes, the PATCH meets the 429.
    app_slice.clock.advance(3600 - (app_slice.clock.now() % 3600) - window_left_s)
    app_slice.sim.set_rate_limit(RateLimitRule(limit=1, mode=mode))  # type: ignore[arg-type]
    app_slice.webhook(sys_id)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "network"
    assert [r.status for r in app_slice.sim.request_log if r.method == "PATCH"][:1] == [429]
    assert app_slice.service.requeue.sent == []  # type: ignore[attr-defined]
    if mode == "none":  # no hint: capped exponential backoff until the window passed
        assert len(app_slice.sleeps) >= 1
        assert max(app_slice.sleeps) <= 2.0
    else:  # the platform said how long: one wait of exactly that long
        assert len(app_slice.sleeps) == 1
        assert window_left_s - 1 <= app_slice.sleeps[0] <= window_left_s + 1


def test_long_429_requeues_the_job_with_a_visibility_delay(app_slice: Slice) -> None:
    sys_id = new_incident(app_slice)
    app_slice.clock.advance(3600 - (app_slice.clock.now() % 3600) - 1800)  # 30 min to reset
    app_slice.sim.set_rate_limit(RateLimitRule(limit=2, mode="retry_after"))
    app_slice.service.pipeline.connector.get("incident", sys_id, ["number"])  # uses 1 of 2
    app_slice.webhook(sys_id)
    app_slice.drain()  # GET passes, PATCH meets a 429 asking for 30 minutes
    [(message, delay)] = app_slice.service.requeue.sent  # type: ignore[attr-defined]
    assert 1790 <= delay <= 1800
    assert EnrichJob.from_message(message).requeues == 1
    assert app_slice.sleeps == []  # no sleeping inside the invocation
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "inquiry"
    # After the delay the requeued job runs and fills the ticket.
    app_slice.clock.advance(delay)
    app_slice.pending.append(message)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "network"


def test_5xx_burst_on_read_is_retried(app_slice: Slice) -> None:
    sys_id = new_incident(app_slice)
    app_slice.webhook(sys_id)
    app_slice.sim.fail_next(3, status=503)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "network"
    assert [r.status for r in app_slice.sim.request_log].count(503) == 3


class FailFirstWrite:
    """Passes calls through to the real connector; the first PATCH meets a 500 from the instance."""

    def __init__(self, inner, sim):  # type: ignore[no-untyped-def]
        self.inner, self.sim, self.armed = inner, sim, True
        self.system = inner.system

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    def update(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.armed:
            self.armed = False
            self.sim.fail_next(1, status=500)
        return self.inner.update(*args, **kwargs)

    def close(self) -> None:
        self.inner.close()


def test_5xx_on_write_raises_for_a_host_retry_and_the_retry_does_not_double_write(
    sim, clock
) -> None:  # type: ignore[no-untyped-def]
    with installed(build_slice(sim, clock, wrap=lambda c: FailFirstWrite(c, sim))) as app:
        sys_id = new_incident(app)
        app.webhook(sys_id)
        job = app.pending[0]
        with pytest.raises(UnavailableError):
            app.drain()  # not retried in-process: a PATCH carrying a work note is not idempotent
        app.pending.append(job)  # the host redelivers the message
        app.drain(dequeue_count=2)
        # A 5xx leaves the write's outcome unknown: the job's claim keeps every worker off for
        # the settle time, so the redelivery is re-queued with that delay instead of writing.
        [(message, delay)] = app.service.requeue.sent  # type: ignore[attr-defined]
        assert delay == pytest.approx(app.service.pipeline.settle_s, abs=1)
        assert sim.get_record("incident", sys_id)["category"] == "inquiry"
        app.clock.advance(delay)
        app.pending.append(message)
        app.drain()
    rec = sim.get_record("incident", sys_id)
    assert rec["category"] == "network"
    assert len(work_notes(app, sys_id)) == 1
    assert [r.status for r in sim.request_log if r.method == "PATCH"] == [500, 200]
    # The holder after the settle time looked for our note before writing.
    assert any(r.path.endswith("/sys_journal_field") for r in sim.request_log)


def test_dropped_connection_on_read_is_retried(app_slice: Slice) -> None:
    sys_id = new_incident(app_slice)
    app_slice.webhook(sys_id)
    app_slice.sim.drop_next(1)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", sys_id)
    assert rec is not None
    assert rec["category"] == "network"


def test_token_expiry_mid_run_refreshes_once(app_slice: Slice) -> None:
    first, second = new_incident(app_slice), new_incident(app_slice)
    app_slice.webhook(first)
    app_slice.drain()
    app_slice.sim.expire_tokens()
    app_slice.webhook(second)
    app_slice.drain()
    rec = app_slice.sim.get_record("incident", second)
    assert rec is not None
    assert rec["category"] == "network"
    token_calls = [r for r in app_slice.sim.request_log if r.path == "/oauth_token.do"]
    assert len(token_calls) == 2


def test_wrong_client_secret_sends_the_job_to_poison(sim, clock) -> None:  # type: ignore[no-untyped-def]
    with installed(build_slice(sim, clock, client_secret="wrong")) as app:
        sys_id = sim.add_record("incident", OUTAGE)
        app.webhook(sys_id)
        app.drain()
    [(message, _)] = app.service.poison.sent  # type: ignore[attr-defined]
    envelope = json.loads(message)
    assert "AuthError" in envelope["reason"]
    assert json.loads(envelope["message"])["record_id"] == sys_id
    assert [r.method for r in sim.request_log if r.path.startswith("/api/now")] == []


def test_shadow_mode_writes_nothing_and_records_what_it_would_have_done(sim, clock) -> None:  # type: ignore[no-untyped-def]
    from connectors.shadow import MemoryShadowStore

    store = MemoryShadowStore()
    with installed(build_slice(sim, clock, shadow=store)) as app:
        sys_id = new_incident(app)
        before = dict(sim.get_record("incident", sys_id) or {})
        app.webhook(sys_id)
        app.drain()
    assert sim.get_record("incident", sys_id) == before  # not a field, not a note
    writes = [r for r in sim.request_log if r.path.startswith("/api/") and r.method != "GET"]
    assert writes == []
    rows = {r.field: r for r in store.since(0)}
    assert rows["category"].value == "network" and rows["category"].action == "write"
    assert rows["category"].number == before["number"]
