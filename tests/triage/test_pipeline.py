import pytest

from connectors.state import MemoryClaimStore
from domain.errors import AuthError, ClaimedError, ConflictError, UnavailableError
from domain.mapping import load_mapping
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from tests.simulators import FakeClock
from triage.pipeline import Pipeline

SYS_ID = "0" * 31 + "1"
M = load_mapping()


def new_incident(**fields):
    base = {
        "number": "INC0010001",
        "short_description": "",
        "description": "Hi, the VPN is down for the whole store. Regards, Anna",
        "category": "inquiry",
        "subcategory": "",
        "impact": "3",
        "urgency": "3",
        "priority": "5",
        "sys_updated_by": "anna.b",
        "sys_mod_count": "0",
    }
    return {**base, **fields}


def make(records, *suggestions, **kwargs):
    connector = FakeConnector(records)
    enricher = FixedEnricher(list(suggestions))
    return Pipeline(connector, M, [enricher], **kwargs), connector, enricher


def test_new_ticket_gets_filled_with_one_write_and_one_note():
    pipe, conn, _ = make(
        {SYS_ID: new_incident()},
        suggestion("category", "network", 0.97),
        suggestion("impact", "high", 0.9),
        suggestion("summary", "VPN down for the whole store", 0.8),
    )
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "written"
    assert conn.updates == [
        (
            SYS_ID,
            {
                "category": "network",
                "impact": "1",
                "short_description": "VPN down for the whole store",
            },
        )
    ]
    assert len(conn.notes) == 1
    assert "category = network (confidence 97%)" in conn.notes[0][1]
    assert result.detail == "stored"


def test_field_a_person_set_stays_untouched():
    pipe, conn, _ = make(
        {SYS_ID: new_incident(category="hardware", short_description="Printer jam")},
        suggestion("category", "network", 0.99),
        suggestion("summary", "Something else", 0.99),
    )
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "nothing_to_write"
    assert conn.updates == []
    assert conn.records[SYS_ID]["category"] == "hardware"


def test_own_write_does_not_trigger_another_enrichment():
    pipe, conn, enricher = make({SYS_ID: new_incident()}, suggestion("category", "network"))
    assert pipe.enrich_record("incident", SYS_ID).status == "written"
    # The business rule fires again on our update: the re-read shows our integration user.
    again = pipe.enrich_record("incident", SYS_ID)
    assert again.status == "skipped"
    assert "integration user" in again.detail
    assert len(conn.updates) == 1
    assert len(enricher.calls) == 1


def test_unchanged_text_is_not_enriched_twice_even_after_a_person_edit():
    pipe, conn, enricher = make({SYS_ID: new_incident()}, suggestion("urgency", "high", 0.5))
    assert pipe.enrich_record("incident", SYS_ID).status == "nothing_to_write"
    conn.records[SYS_ID]["assigned_to"] = "bob"  # a person touches an unrelated field
    assert pipe.enrich_record("incident", SYS_ID).status == "skipped"
    conn.records[SYS_ID]["description"] = "Now the printer is also broken"
    assert pipe.enrich_record("incident", SYS_ID).status == "nothing_to_write"
    assert len(enricher.calls) == 2


def test_dry_run_writes_nothing():
    pipe, conn, _ = make({SYS_ID: new_incident()}, suggestion("category", "network"), dry_run=True)
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "dry_run"
    assert result.changes == {"category": "network"}
    assert conn.updates == []


def test_platform_errors_propagate_and_nothing_is_remembered():
    pipe, conn, _ = make({SYS_ID: new_incident()}, suggestion("category", "network"))
    conn.fail_next.append(UnavailableError("boom", system="servicenow", status_code=503))
    with pytest.raises(UnavailableError):
        pipe.enrich_record("incident", SYS_ID)
    assert pipe.enrich_record("incident", SYS_ID).status == "written"


def _worker(conn, claims, *suggestions, **kwargs):
    return Pipeline(conn, M, [FixedEnricher(list(suggestions))], claims=claims, **kwargs)


def test_a_second_worker_backs_off_while_the_first_holds_the_claim():
    clock = FakeClock()
    claims = MemoryClaimStore(now=clock.now)
    conn = FakeConnector({SYS_ID: new_incident()})
    first = _worker(conn, claims, suggestion("category", "network"))
    # The first worker crashes after claiming (before writing): its claim stays until it expires.
    conn.commit_then_fail.append(RuntimeError("worker killed"))
    with pytest.raises(RuntimeError):
        first.enrich_record("incident", SYS_ID)
    second = _worker(conn, claims, suggestion("category", "network"))
    conn.records[SYS_ID]["sys_updated_by"] = "anna.b"  # a person touched it since: no loop guard
    with pytest.raises(ClaimedError) as caught:
        second.enrich_record("incident", SYS_ID)
    assert 0 < caught.value.retry_after_s <= first.settle_s
    assert len(conn.notes) == 1


def test_a_late_commit_is_found_on_retry_and_not_written_twice():
    clock = FakeClock()
    claims = MemoryClaimStore(now=clock.now)
    conn = FakeConnector({SYS_ID: new_incident()})
    pipe = _worker(conn, claims, suggestion("category", "network"))
    # The PATCH lands but the answer never comes back (read timeout).
    conn.commit_then_fail.append(UnavailableError("read timeout", system="servicenow"))
    with pytest.raises(UnavailableError):
        pipe.enrich_record("incident", SYS_ID)
    conn.records[SYS_ID]["sys_updated_by"] = "anna.b"  # defeat the loop guard on purpose
    with pytest.raises(ClaimedError):  # redelivered within the settle time
        pipe.enrich_record("incident", SYS_ID, retry=True)
    clock.advance(pipe.settle_s + 1)
    result = pipe.enrich_record("incident", SYS_ID, retry=True)
    assert result.status == "skipped"
    assert "note" in result.detail
    assert len(conn.notes) == 1
    # ... and the job is done for good.
    assert pipe.enrich_record("incident", SYS_ID, retry=True).status == "skipped"
    assert len(conn.notes) == 1


def test_a_refused_write_releases_the_claim_at_once():
    conn = FakeConnector({SYS_ID: new_incident()})
    pipe = _worker(conn, MemoryClaimStore(), suggestion("category", "network"))
    conn.fail_update.append(AuthError("forbidden", system="servicenow", status_code=403))
    with pytest.raises(AuthError):
        pipe.enrich_record("incident", SYS_ID)
    assert pipe.enrich_record("incident", SYS_ID).status == "written"
    assert len(conn.notes) == 1


def test_a_person_edit_between_read_and_write_is_restored_and_reported():
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.person_edits.append(("anna.b", {"category": "hardware"}))
    pipe = _worker(
        conn,
        MemoryClaimStore(),
        suggestion("category", "network", 0.99),
        suggestion("impact", "high", 0.99),
    )
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "conflict"
    assert "category" in result.detail
    assert conn.records[SYS_ID]["category"] == "hardware"  # the person's value is back
    assert conn.records[SYS_ID]["impact"] == "1"  # our other field stays
    fills = [n for _, n in conn.notes if "input " in n]
    assert len(fills) == 1
    assert any("their value is kept" in n for _, n in conn.notes)


def test_a_person_edit_of_another_field_is_no_conflict():
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.person_edits.append(("anna.b", {"assigned_to": "bob"}))
    pipe = _worker(conn, MemoryClaimStore(), suggestion("category", "network", 0.99))
    assert pipe.enrich_record("incident", SYS_ID).status == "written"
    assert len(conn.notes) == 1


def test_a_lost_answer_after_a_clobbering_write_is_repaired_on_retry():
    clock = FakeClock()
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.person_edits.append(("anna.b", {"category": "hardware"}))
    conn.commit_then_fail.append(UnavailableError("read timeout", system="servicenow"))
    pipe = _worker(conn, MemoryClaimStore(now=clock.now), suggestion("category", "network", 0.99))
    with pytest.raises(UnavailableError):
        pipe.enrich_record("incident", SYS_ID)
    assert conn.records[SYS_ID]["category"] == "network"  # the clobber landed
    # The next job for the ticket (a redelivery, or a duplicate re-queued with a fresh
    # dequeue count) sees our update last and checks it.
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "conflict"
    assert conn.records[SYS_ID]["category"] == "hardware"
    assert len([n for _, n in conn.notes if "input " in n]) == 1
    # The restore is our latest update now: checking it again finds nothing to do.
    assert pipe.enrich_record("incident", SYS_ID, retry=True).status == "skipped"
    assert conn.records[SYS_ID]["category"] == "hardware"


def test_a_conditional_write_refused_as_stale_re_reads_and_re_decides():
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.refuse_stale = True  # Dataverse: If-Match with the etag we read
    conn.person_edits.append(("anna.b", {"category": "hardware"}))  # lands after our read
    pipe = _worker(
        conn,
        MemoryClaimStore(),
        suggestion("category", "network", 0.99),
        suggestion("impact", "high", 0.99),
    )
    result = pipe.enrich_record("incident", SYS_ID)
    assert result.status == "written"
    assert conn.records[SYS_ID]["category"] == "hardware"  # the person's value, never overwritten
    assert conn.records[SYS_ID]["impact"] == "1"  # re-decided: only what is still unset
    assert conn.updates == [(SYS_ID, {"impact": "1"})]
    assert len(conn.notes) == 1


def test_a_record_that_keeps_changing_gives_up_without_writing():
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.refuse_stale = True
    for n in range(5):
        conn.person_edits.append(("bot", {"assigned_to": f"agent{n}"}))
    conn.person_edits_per_update = 1
    pipe = _worker(conn, MemoryClaimStore(), suggestion("category", "network", 0.99))
    with pytest.raises(ConflictError):
        pipe.enrich_record("incident", SYS_ID)
    assert conn.updates == [] and conn.notes == []
    # The claim was released (nothing landed): the host's retry can try again at once.
    conn.person_edits.clear()
    assert pipe.enrich_record("incident", SYS_ID, retry=True).status == "written"


def test_an_empty_description_is_read_from_the_first_email():
    conn = FakeConnector({SYS_ID: new_incident(description="")})
    conn.emails[SYS_ID] = "<p>Hej, kassen i butik 7 virker ikke.</p>"
    enricher = FixedEnricher([suggestion("category", "hardware", 0.99)])
    pipe = Pipeline(conn, M, [enricher], claims=MemoryClaimStore())
    pipe.enrich_record("incident", SYS_ID)
    assert "kassen i butik 7" in enricher.calls[0].description


def test_a_choice_stored_as_an_integer_counts_as_stored():
    conn = FakeConnector({SYS_ID: new_incident()})
    conn.integer_fields = {"impact"}  # Dataverse answers option-set values as integers
    pipe = _worker(conn, MemoryClaimStore(), suggestion("impact", "high", 0.99))
    assert pipe.enrich_record("incident", SYS_ID).detail == "stored"
