"""Per-field modes (fill / suggest / off), shadow mode, and the mapping version in the note."""

import uuid

import pytest
from azure.data.tables import TableClient

from connectors.shadow import MemoryShadowStore, ShadowRecord, TableShadowStore
from connectors.state import MemoryClaimStore
from domain.errors import UnavailableError
from domain.mapping import load_mapping
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from tests.triage.test_pipeline import SYS_ID, new_incident
from triage.pipeline import Pipeline, input_hash

M = load_mapping()
SUGGESTIONS = [suggestion("category", "network", 0.99), suggestion("impact", "high", 0.99)]


def run(mapping, **kwargs):
    conn = FakeConnector({SYS_ID: new_incident()})
    pipe = Pipeline(
        conn, mapping, [FixedEnricher(SUGGESTIONS)], claims=MemoryClaimStore(), **kwargs
    )
    return pipe.enrich_record("incident", SYS_ID), conn


def test_a_field_in_suggest_mode_is_named_in_the_note_and_not_written():
    result, conn = run(M.model_copy(update={"modes": {"impact": "suggest"}}))
    assert result.status == "written"
    assert conn.updates == [(SYS_ID, {"category": "network"})]
    [(_, note)] = conn.notes
    assert "Suggested (not filled" in note and "- impact = high" in note


def test_only_suggestions_give_a_note_and_no_field_change():
    result, conn = run(M.model_copy(update={"modes": {"impact": "suggest", "category": "suggest"}}))
    assert result.status == "suggested"
    assert conn.updates == [(SYS_ID, {})]
    [(_, note)] = conn.notes
    assert "nothing was filled" in note and "- category = network" in note
    assert conn.records[SYS_ID]["category"] == "inquiry"


def test_a_field_switched_off_is_neither_written_nor_mentioned():
    result, conn = run(M.model_copy(update={"modes": {"impact": "off"}}))
    assert conn.updates == [(SYS_ID, {"category": "network"})]
    assert "impact" not in conn.notes[0][1]
    assert [d.field for d in result.decisions] == ["category"]


def test_the_note_names_the_mapping_version_and_the_input():
    _, conn = run(M)
    last = conn.notes[0][1].splitlines()[-1]
    assert last.startswith(f"mapping {M.fingerprint}, input ")
    other = M.model_copy(update={"min_confidence": {**M.min_confidence, "impact": 0.5}})
    assert other.fingerprint != M.fingerprint


def test_shadow_mode_records_every_suggestion_and_writes_nothing():
    store = MemoryShadowStore()
    result, conn = run(M, shadow=store, model_version="m-42", now=lambda: 1000.0)
    assert result.status == "shadow"
    assert conn.updates == [] and conn.notes == []
    assert result.changes == {"category": "network", "impact": "1"}  # what fill would write
    rows = list(store.since(0))
    assert {(r.field, r.value, r.action) for r in rows} == {
        ("category", "network", "write"), ("impact", "high", "write")
    }  # fmt: skip
    assert {r.mapping_version for r in rows} == {M.fingerprint}
    assert {r.model_version for r in rows} == {"m-42"}


def test_shadow_mode_records_an_input_once():
    store = MemoryShadowStore()
    conn = FakeConnector({SYS_ID: new_incident()})
    pipe = Pipeline(conn, M, [FixedEnricher(SUGGESTIONS)], claims=MemoryClaimStore(), shadow=store)
    pipe.enrich_record("incident", SYS_ID)
    assert pipe.enrich_record("incident", SYS_ID).status == "skipped"
    assert len(list(store.since(0))) == 2


@pytest.mark.azurite
def test_table_shadow_store_round_trips_and_filters_by_time(azurite):
    client = TableClient.from_connection_string(
        azurite.connection_string, f"shadow{uuid.uuid4().hex[:12]}"
    )
    store = TableShadowStore(client)

    def row(field: str, at: float) -> ShadowRecord:
        return ShadowRecord(
            system="servicenow", table="incident", record_id=SYS_ID, number="INC1", field=field,
            value="network", confidence=0.97, reason="keywords: vpn", source="keywords",
            action="write", why="empty", input_hash="abc", mapping_version="v1",
            model_version="", at=at,
        )  # fmt: skip

    store.record([row("category", 100.0), row("impact", 200.0)])
    store.record([row("impact", 200.0)])  # the same ticket, field and input: replaced
    assert sorted(r.field for r in store.since(0)) == ["category", "impact"]
    assert [r.field for r in store.since(150.0)] == ["impact"]
    assert input_hash  # the pipeline's own hash is what input_hash carries


def test_after_go_live_the_decision_log_records_what_was_written():
    log = MemoryShadowStore()
    result, conn = run(M, decision_log=log)
    assert result.status == "written" and len(conn.updates) == 1
    assert {(r.field, r.action) for r in log.since(0)} == {
        ("category", "write"),
        ("impact", "write"),
    }


def test_a_decision_log_outage_never_fails_a_written_ticket():
    class Down:
        def record(self, rows):
            raise UnavailableError("storage down", system="storage")

        def since(self, timestamp):
            return iter(())

    result, conn = run(M, decision_log=Down())
    assert result.status == "written" and len(conn.notes) == 1
