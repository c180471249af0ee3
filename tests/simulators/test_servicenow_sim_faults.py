"""The ServiceNow simulator keeps sys_audit and stages the races of the fault matrix.

Delays here are real time (the staged faults sleep on the simulator's stop event) but short:
holds of 0.4-0.5 s against client read timeouts of 0.2 s.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from tests.simulators.servicenow import ServiceNowSimulator

TABLE = "/api/now/table/incident"
AUDIT = "/api/now/table/sys_audit"
HOLD_S = 0.5
CLIENT_TIMEOUT_S = 0.2


def get(http: requests.Session, sim: ServiceNowSimulator, path: str, **params: Any) -> Any:
    resp = http.get(sim.url + path, params=params, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def stored(sim: ServiceNowSimulator, sys_id: str) -> dict[str, str]:
    rec = sim.get_record("incident", sys_id)
    assert rec is not None
    return rec


def changes(rows: list[dict[str, str]]) -> list[tuple[str, str, str, str, str]]:
    """(fieldname, oldvalue, newvalue, record_checkpoint, user) per sys_audit row."""
    return [
        (r["fieldname"], r["oldvalue"], r["newvalue"], r["record_checkpoint"], r["user"])
        for r in rows
    ]


@pytest.fixture
def inc(sim: ServiceNowSimulator) -> str:
    return sim.add_record("incident", {"short_description": "VPN down"})


# ---- sys_audit --------------------------------------------------------------------------------


def test_updates_are_audited_per_field_with_checkpoint_and_user(sim, http, clock, inc):
    clock.advance(60)
    body = {"impact": "1", "urgency": "2", "work_notes": "triaged", "u_bogus": "x"}
    assert http.patch(f"{sim.url}{TABLE}/{inc}", json=body, timeout=5).status_code == 200
    assert changes(sim.audit(inc)) == [
        ("impact", "3", "1", "1", "admin"),
        ("urgency", "3", "2", "1", "admin"),
        ("priority", "5", "2", "1", "admin"),  # derived fields are audited like any change
        ("work_notes", "", "triaged", "1", "admin"),  # journal entry: "" -> the entry text
    ]
    row = sim.audit(inc, "impact")[0]
    assert (row["tablename"], row["documentkey"], row["sys_created_by"], row["reason"]) == (
        "incident", inc, "admin", "",
    )  # fmt: skip
    assert row["sys_created_on"] == "2026-01-01 00:01:00"
    assert sim.update_record("incident", inc, {"category": "network"})["sys_mod_count"] == "2"
    assert changes(sim.audit(inc, "category")) == [
        ("category", "inquiry", "network", "2", "anna.b")
    ]
    http.patch(f"{sim.url}{TABLE}/{inc}", json={"impact": "1"}, timeout=5)  # no change
    assert len(sim.audit(inc)) == 5  # nothing changed: no update, nothing audited
    assert sim.records("sys_audit")[0]["internal_checkpoint"] != ""


def test_sys_audit_is_readable_over_the_table_api(sim, http, inc):
    http.patch(f"{sim.url}{TABLE}/{inc}", json={"category": "network", "impact": "2"}, timeout=5)
    sim.update_record("incident", inc, {"impact": "1", "comments": "called back"})
    query = f"documentkey={inc}^record_checkpoint=1^fieldnameINcategory,impact"
    rows = get(http, sim, AUDIT, sysparm_query=query, sysparm_fields="fieldname,newvalue,user")
    assert sorted(rows, key=lambda r: r["fieldname"]) == [
        {"fieldname": "category", "newvalue": "network", "user": "admin"},
        {"fieldname": "impact", "newvalue": "2", "user": "admin"},
    ]
    query = f"documentkey={inc}^record_checkpoint>1^ORDERBYfieldname"
    rows = get(http, sim, AUDIT, sysparm_query=query, sysparm_fields="fieldname,user")
    assert rows == [
        {"fieldname": "comments", "user": "anna.b"},
        {"fieldname": "impact", "user": "anna.b"},
        {"fieldname": "priority", "user": "anna.b"},
    ]


INSERT_AUDIT = [  # every field given a value, in table order, then the journal entry
    ("number", "", "INC0010001", "0", "admin"),
    ("short_description", "", "Mail down", "0", "admin"),
    ("category", "", "inquiry", "0", "admin"),
    ("impact", "", "3", "0", "admin"),
    ("urgency", "", "3", "0", "admin"),
    ("priority", "", "5", "0", "admin"),
    ("state", "", "1", "0", "admin"),
    ("active", "", "true", "0", "admin"),
    ("opened_at", "", "2026-01-01 00:00:00", "0", "admin"),
    ("sys_class_name", "", "incident", "0", "admin"),
    ("comments", "", "first", "0", "admin"),
]


@pytest.mark.parametrize(("audit_inserts", "expected"), [(False, []), (True, INSERT_AUDIT)])
def test_inserts_are_audited_only_with_audit_inserts(clock, audit_inserts, expected):
    users = {"admin": "pw"}
    with ServiceNowSimulator(users=users, clock=clock, audit_inserts=audit_inserts) as sim:
        body = {"short_description": "Mail down", "comments": "first"}
        resp = requests.post(sim.url + TABLE, json=body, auth=("admin", "pw"), timeout=5)
        assert resp.status_code == 201
        assert changes(sim.audit(resp.json()["result"]["sys_id"])) == expected
        sim.add_record("sys_user", {"user_name": "x"})  # only incident is audited
        assert len(sim.records("sys_audit")) == len(expected)
    assert sim.errors == []


# ---- update_record and before_write ----------------------------------------------------------


def test_update_record_acts_as_a_person(sim, clock, inc):
    writes: list[tuple[str, str, str, str]] = []
    sim.on_write(lambda table, rec, op, user: writes.append((table, rec["impact"], op, user)))
    clock.advance(30)
    rec = sim.update_record("incident", inc, {"impact": "1", "work_notes": "on it"})
    assert (rec["impact"], rec["priority"], rec["sys_mod_count"]) == ("1", "3", "1")
    assert (rec["sys_updated_by"], rec["sys_updated_on"]) == ("anna.b", "2026-01-01 00:00:30")
    assert rec == stored(sim, inc)
    assert [(e["value"], e["sys_created_by"]) for e in sim.journal(inc)] == [("on it", "anna.b")]
    assert writes == [("incident", "1", "update", "anna.b")]
    assert sim.update_record("incident", inc, {"impact": "1"}, user="bo")["sys_mod_count"] == "1"
    assert len(writes) == 1  # no change, no business rule
    with pytest.raises(ValueError, match="u_typo"):
        sim.update_record("incident", inc, {"u_typo": "x"})
    with pytest.raises(KeyError):
        sim.update_record("incident", "0" * 32, {"impact": "2"})


def test_before_write_lets_a_person_edit_between_read_and_patch(sim, http, inc):
    url = f"{sim.url}{TABLE}/{inc}"
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def person_edits_first(table: str, sys_id: str, body: dict[str, Any]) -> None:
        seen.append((table, sys_id, body))
        sim.update_record(table, sys_id, {"category": "hardware", "impact": "2"})

    read = get(http, sim, f"{TABLE}/{inc}")
    assert read["sys_mod_count"] == "0"
    sim.before_write(person_edits_first)
    result = http.patch(url, json={"impact": "1", "work_notes": "auto"}, timeout=5).json()["result"]
    assert seen == [("incident", inc, {"impact": "1", "work_notes": "auto"})]
    assert (result["sys_mod_count"], result["category"], result["impact"]) == ("2", "hardware", "1")
    assert changes(sim.audit(inc, "impact")) == [
        ("impact", "3", "2", "1", "anna.b"),  # the person's edit landed first ...
        ("impact", "2", "1", "2", "admin"),  # ... then our PATCH overwrote it
    ]
    sim.before_write(None)
    assert (
        http.patch(url, json={"urgency": "1"}, timeout=5).json()["result"]["sys_mod_count"] == "3"
    )
    assert len(seen) == 1
    assert http.post(sim.url + TABLE, json={}, timeout=5).status_code == 201  # POST: not called


# ---- staged write faults ---------------------------------------------------------------------


def test_commit_then_delay_times_the_client_out_although_the_write_landed(sim, http, inc):
    sim.commit_then_delay(1, HOLD_S)
    url = f"{sim.url}{TABLE}/{inc}"
    assert http.get(url, timeout=5).status_code == 200  # reads do not take staged write faults
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        http.patch(url, json={"impact": "1"}, timeout=CLIENT_TIMEOUT_S)
    assert time.monotonic() - started < HOLD_S
    assert (stored(sim, inc)["impact"], stored(sim, inc)["sys_mod_count"]) == ("1", "1")
    assert sim.wait_idle(5)
    assert http.patch(url, json={"impact": "2"}, timeout=CLIENT_TIMEOUT_S).status_code == 200


def test_commit_then_drop_hangs_up_after_committing(sim, http, inc):
    writes: list[str] = []
    sim.on_write(lambda table, rec, op, user: writes.append(op))
    sim.commit_then_drop(1)
    url = f"{sim.url}{TABLE}/{inc}"
    with pytest.raises(requests.ConnectionError):
        http.patch(url, json={"work_notes": "once"}, timeout=5)
    assert [e["value"] for e in sim.journal(inc)] == ["once"]
    assert writes == ["update"]  # the business rule fired: the write committed
    assert [(e.method, e.status) for e in sim.request_log] == [("PATCH", 0)]
    assert http.patch(url, json={"impact": "2"}, timeout=5).status_code == 200


def test_refuse_writes_answers_5xx_and_applies_nothing(sim, http, inc):
    sim.refuse_writes(1, status=502)
    url = f"{sim.url}{TABLE}/{inc}"
    resp = http.patch(url, json={"impact": "1", "work_notes": "no"}, timeout=5)
    assert resp.status_code == 502
    assert (stored(sim, inc)["impact"], sim.journal(inc)) == ("3", [])
    assert http.get(url, timeout=5).status_code == 200  # reads are not taken by write faults
    assert http.patch(url, json={"impact": "2"}, timeout=5).status_code == 200


def test_drop_writes_hangs_up_without_applying(sim, http, inc):
    sim.drop_writes(1)
    url = f"{sim.url}{TABLE}/{inc}"
    with pytest.raises(requests.ConnectionError):
        http.patch(url, json={"impact": "1", "work_notes": "no"}, timeout=5)
    assert (stored(sim, inc)["impact"], sim.journal(inc)) == ("3", [])
    assert [(e.method, e.status) for e in sim.request_log] == [("PATCH", 0)]


def test_delay_then_commit_lands_after_the_client_gave_up(sim, http, inc):
    sim.delay_then_commit(1, HOLD_S)
    url = f"{sim.url}{TABLE}/{inc}"
    with pytest.raises(requests.ReadTimeout):
        http.patch(url, json={"impact": "1", "work_notes": "late"}, timeout=CLIENT_TIMEOUT_S)
    # The redelivered job re-reads: the held write has not landed, and reads are not blocked.
    started = time.monotonic()
    with requests.Session() as other:
        other.auth = ("admin", "pw")
        reread = get(other, sim, f"{TABLE}/{inc}")
    assert time.monotonic() - started < HOLD_S / 2
    assert (reread["impact"], reread["sys_mod_count"]) == ("3", "0")
    assert sim.journal(inc) == []
    assert not sim.wait_idle(0.01)
    assert sim.wait_idle(5)
    assert (stored(sim, inc)["impact"], stored(sim, inc)["sys_mod_count"]) == ("1", "1")
    assert [e["value"] for e in sim.journal(inc)] == ["late"]


def test_staged_faults_apply_in_order_to_the_next_writes_only(sim, http, inc):
    sim.commit_then_drop(1)
    sim.commit_then_delay(1, HOLD_S)
    url = f"{sim.url}{TABLE}/{inc}"
    with pytest.raises(requests.ConnectionError):
        http.patch(url, json={"impact": "1"}, timeout=5)
    with pytest.raises(requests.ReadTimeout):
        http.post(sim.url + TABLE, json={"short_description": "x"}, timeout=CLIENT_TIMEOUT_S)
    assert http.patch(url, json={"impact": "2"}, timeout=CLIENT_TIMEOUT_S).status_code == 200
    assert len(sim.records("incident")) == 2
    sim.delay_then_commit(1, 30)
    sim.reset_faults()  # clears staged faults not yet taken
    assert http.patch(url, json={"impact": "3"}, timeout=CLIENT_TIMEOUT_S).status_code == 200
    assert sim.wait_idle(5)


@pytest.mark.parametrize("stage", ["commit_then_delay", "delay_then_commit"])
def test_stop_wakes_held_writes_promptly(sim, http, inc, stage):
    getattr(sim, stage)(1, 30)
    url = f"{sim.url}{TABLE}/{inc}"
    with pytest.raises(requests.ReadTimeout):
        http.patch(url, json={"impact": "1"}, timeout=CLIENT_TIMEOUT_S)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    assert sim.wait_idle(0)
    assert stored(sim, inc)["impact"] == "1"  # woken early, the held write still commits


def test_held_writes_do_not_block_each_other(sim, inc):
    sim.delay_then_commit(3, HOLD_S)
    url = f"{sim.url}{TABLE}/{inc}"
    outcomes: list[str] = []

    def patch(note: str) -> None:
        try:
            requests.patch(url, json={"work_notes": note}, auth=("admin", "pw"), timeout=5)
            outcomes.append("answered")
        except requests.RequestException as exc:  # reported by the assertion below
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=patch, args=(f"n{i}",)) for i in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == ["answered"] * 3
    assert time.monotonic() - started < 2 * HOLD_S  # held side by side, not one after another
    assert sorted(e["value"] for e in sim.journal(inc)) == ["n0", "n1", "n2"]
    assert stored(sim, inc)["sys_mod_count"] == "3"
