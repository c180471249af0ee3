"""The Dynamics 365 default mapping through the real enrichers and the pipeline."""

from connectors.state import MemoryClaimStore
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, load_mapping, to_ticket
from enrichers import default_enrichers
from tests.fakes import FakeConnector
from triage.pipeline import Pipeline

CASE = "5f6b1c1e-7a2b-4c8d-9e0f-1a2b3c4d5e6f"
APP_USER = "0a1b2c3d-0000-4000-8000-00000000abcd"
M = load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH).model_copy(update={"integration_user": APP_USER})


def case(**fields):
    base = {
        "title": "Kasse nede i alle butikker",
        "description": "Hej, kasserne virker ikke i alle butikker siden i morges. Det haster!",
        "prioritycode": "2",
        "ticketnumber": "CAS-01001-X1Y2Z3",
        "_modifiedby_value": "9e9e9e9e-0000-4000-8000-000000000001",
    }
    return {**base, **fields}


def test_reads_only_out_of_box_columns():
    assert set(M.platform_fields()) == {
        "title", "description", "prioritycode", "ticketnumber", "_modifiedby_value"
    }  # fmt: skip


def test_an_outage_case_gets_high_priority_and_one_annotation():
    conn = FakeConnector({CASE: case()})
    pipe = Pipeline(conn, M, default_enrichers(M), claims=MemoryClaimStore())
    result = pipe.enrich_record("incident", CASE)
    assert result.status == "written", result.detail
    assert conn.updates == [(CASE, {"prioritycode": "1"})]
    [(record, note)] = conn.notes
    assert record == CASE and "priority = critical" in note and "impact" in note


def test_a_priority_an_agent_chose_stays():
    conn = FakeConnector({CASE: case(prioritycode="3")})
    pipe = Pipeline(conn, M, default_enrichers(M), claims=MemoryClaimStore())
    assert pipe.enrich_record("incident", CASE).status == "nothing_to_write"
    assert conn.updates == []


def test_our_own_update_is_not_enriched_again():
    conn = FakeConnector({CASE: case(_modifiedby_value=APP_USER)})
    pipe = Pipeline(conn, M, default_enrichers(M), claims=MemoryClaimStore())
    assert pipe.enrich_record("incident", CASE).status == "skipped"


def test_the_ticket_carries_the_case_number():
    assert to_ticket(case(), M, record_id=CASE).number == "CAS-01001-X1Y2Z3"


def test_column_types_tell_the_connector_how_to_write_each_column():
    mapping = M.model_copy(
        update={
            "fields": {**M.fields, "category": "_subjectid_value", "summary": "new_summary"},
            "values": {**M.values, "category": {"returns": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}},
        }
    )
    assert mapping.column_types() == {
        "prioritycode": "choice",
        "_subjectid_value": "lookup:subjects",
        "new_summary": "text",
    }


def test_category_and_subcategory_in_the_subject_tree_write_the_most_specific_subject():
    from tests.fakes import FixedEnricher, suggestion

    network, vpn = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
    mapping = M.model_copy(
        update={
            "fields": {
                **M.fields,
                "category": "_subjectid_value",
                "subcategory": "_subjectid_value",
            },
            "values": {**M.values, "category": {"network": network}, "subcategory": {"vpn": vpn}},
            "subcategory_parent": {"vpn": "network"},
        }
    )
    conn = FakeConnector({CASE: case(_subjectid_value="")})
    enricher = FixedEnricher([suggestion("subcategory", "vpn"), suggestion("category", "network")])
    pipe = Pipeline(conn, mapping, [enricher], claims=MemoryClaimStore())
    result = pipe.enrich_record("incident", CASE)
    assert conn.updates == [(CASE, {"_subjectid_value": vpn})]
    assert result.detail == "stored"
