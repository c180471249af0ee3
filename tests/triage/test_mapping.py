import json

import pytest

from domain.errors import ConfigError
from domain.mapping import FieldMapping, load_mapping, to_ticket

BASE = {
    "fields": {
        "title": "short_description",
        "description": "description",
        "category": "category",
        "impact": "impact",
        "priority": "priority",
    },
    "values": {
        "category": {"network": "network", "access": "request", "inquiry": "inquiry"},
        "impact": {"high": "1", "medium": "2", "low": "3"},
        "urgency": {"high": "1", "medium": "2", "low": "3"},
    },
    "unset": {"category": ["inquiry"]},
}


def test_default_mapping_loads_and_maps_raw_values():
    m = load_mapping()
    assert m.to_raw("impact", "high") == "1"
    assert m.to_canonical("category", "request") == "account_access"
    assert m.is_unset("category", "inquiry")
    assert m.is_unset("category", "  ")
    assert not m.is_unset("category", "network")
    assert not m.writes("priority")  # ServiceNow computes priority


def test_to_ticket_reads_text_and_canonical_current_values():
    m = FieldMapping.model_validate(BASE)
    raw = {"short_description": "VPN", "description": "down", "category": "request", "impact": ""}
    t = to_ticket(raw, m, record_id="r1")
    assert (t.title, t.description) == ("VPN", "down")
    assert t.current["category"] == "access"
    assert t.current["impact"] is None
    unset = to_ticket({**raw, "category": "inquiry"}, m, record_id="r1")
    assert unset.current["category"] is None
    unknown = to_ticket({**raw, "category": "facilities"}, m, record_id="r1")
    assert unknown.current["category"] == "facilities"  # set by someone: counts as set


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"fields": {"description": "d"}}, "fields.title"),
        ({"keywords": {"category": {"hardware": ["printer"]}}}, "keywords.category.hardware"),
        ({"min_confidence": {"category": 1.5}}, "min_confidence.category"),
        ({"write_back": {"priority": True}}, "write_back.priority"),
        ({"priority_matrix": {"huge": {"high": "critical"}}}, "priority_matrix.huge"),
        ({"subcategory_parent": {"vpn": "telepathy"}}, "subcategory_parent.vpn"),
        ({"colour": "blue"}, "colour"),
        ({"version": 2}, "version"),
    ],
)
def test_invalid_mappings_name_the_key(tmp_path, patch, match):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({**BASE, **patch}))
    with pytest.raises(ConfigError, match=match):
        load_mapping(path)


def test_unreadable_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fields: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_mapping(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level"):
        load_mapping(listy)


def test_yaml_mapping_loads(tmp_path):
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_mapping(path).to_raw("category", "access") == "request"


def test_a_copy_with_other_values_maps_with_the_new_values():
    m = load_mapping()
    assert m.to_canonical("impact", "1") == "high"  # caches the reverse table
    copy = m.model_copy(update={"values": {**m.values, "impact": {"high": "9"}}})
    assert copy.to_canonical("impact", "9") == "high"
    assert copy.fingerprint != m.fingerprint
