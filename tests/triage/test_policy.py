from domain.mapping import load_mapping
from domain.models import Ticket
from tests.fakes import suggestion
from triage.policy import decide, render_note, to_changes

M = load_mapping()


def ticket(**current):
    base = dict.fromkeys(("category", "subcategory", "impact", "urgency", "summary"))
    return Ticket(record_id="r", title="", description="x", current={**base, **current})


def by_field(decisions):
    return {d.field: d for d in decisions}


def test_writes_empty_fields_that_clear_their_threshold():
    chosen = {"category": suggestion("category", "network", 0.95)}
    d = by_field(decide(ticket(), chosen, M))
    assert d["category"].action == "write"
    assert to_changes(list(d.values()), M) == {"category": "network"}


def test_never_overwrites_a_value_a_person_set():
    chosen = {"category": suggestion("category", "network", 0.99)}
    d = by_field(decide(ticket(category="hardware"), chosen, M))
    assert d["category"].action == "skip"
    assert "never overwritten" in d["category"].why


def test_below_threshold_is_skipped():
    chosen = {"category": suggestion("category", "network", M.threshold("category") - 0.01)}
    assert by_field(decide(ticket(), chosen, M))["category"].action == "skip"


def test_priority_is_never_written_to_servicenow():
    chosen = {"priority": suggestion("priority", "critical", 1.0)}
    d = by_field(decide(ticket(), chosen, M))
    assert d["priority"].action == "skip"
    assert to_changes(list(d.values()), M) == {}


def test_unmapped_value_is_skipped():
    chosen = {"category": suggestion("category", "facilities", 0.99)}
    assert "no platform value" in by_field(decide(ticket(), chosen, M))["category"].why


def test_no_op_write_is_skipped():
    chosen = {"impact": suggestion("impact", "low", 0.99)}
    d = by_field(decide(ticket(), chosen, M, raw={"impact": "3"}))
    assert d["impact"].why == "already has this value"
    d2 = by_field(
        decide(ticket(), {"impact": suggestion("impact", "high")}, M, raw={"impact": "3"})
    )
    assert d2["impact"].action == "write"


def test_subcategory_must_belong_to_the_category():
    chosen = {
        "category": suggestion("category", "hardware", 0.99),
        "subcategory": suggestion("subcategory", "vpn", 0.99),
    }
    d = by_field(decide(ticket(), chosen, M))
    assert d["subcategory"].action == "skip"
    assert "network" in d["subcategory"].why
    ok = by_field(decide(ticket(category="network"), {"subcategory": chosen["subcategory"]}, M))
    assert ok["subcategory"].action == "write"


def test_note_lists_filled_and_skipped_fields_with_confidence():
    chosen = {
        "category": suggestion("category", "network", 0.93),
        "urgency": suggestion("urgency", "high", 0.5),
    }
    note = render_note(decide(ticket(), chosen, M), M)
    assert note.startswith("[auto-triage]")
    assert "category = network (confidence 93%)" in note
    assert "urgency: high (confidence 0.50 below threshold" in note
