import pytest

from tests.fakes import FakeConnector, FixedEnricher, suggestion
from triage.errors import UnavailableError
from triage.mapping import load_mapping
from triage.pipeline import MemorySeenStore, Pipeline

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


def test_memory_seen_store_is_bounded():
    store = MemorySeenStore(max_items=2)
    for key in "abc":
        store.remember(key)
    assert not store.seen("a")
    assert store.seen("b") and store.seen("c")
