"""The simulator's ``$filter`` / ``$orderby`` / ``$select`` subset: what matches, what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.simulators.dataverse_odata import (
    ODataError,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_rows,
)
from tests.simulators.dataverse_schema import SCHEMAS, ValidationError

INC = SCHEMAS["incidents"]
SUBJECT = "9a9a9a9a-0000-4000-8000-000000000001"
ROWS: list[dict[str, Any]] = [
    {"incidentid": "1", "title": "VPN down", "prioritycode": 1, "statecode": 0,
     "_subjectid_value": SUBJECT, "createdon": "2026-01-01T10:00:00Z", "description": None},
    {"incidentid": "2", "title": "O'Brien's laptop", "prioritycode": 2, "statecode": 0,
     "_subjectid_value": None, "createdon": "2026-01-02T10:00:00Z", "description": "screen"},
    {"incidentid": "3", "title": "vpn slow", "prioritycode": 3, "statecode": 1,
     "_subjectid_value": None, "createdon": "2026-01-03T10:00:00Z", "description": "VPN"},
]  # fmt: skip


def ids(expr: str) -> list[str]:
    pred = parse_filter(INC, expr)
    return [r["incidentid"] for r in ROWS if pred(r)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("prioritycode eq 1", ["1"]),
        ("prioritycode ne 1", ["2", "3"]),
        ("prioritycode gt 1 and prioritycode le 3", ["2", "3"]),
        ("prioritycode lt 2 or statecode eq 1", ["1", "3"]),
        ("(prioritycode eq 1 or prioritycode eq 3) and statecode eq 0", ["1"]),
        ("title eq 'vpn DOWN'", ["1"]),  # case-insensitive, like the SQL collation
        ("title eq 'O''Brien''s laptop'", ["2"]),
        ("contains(title,'vpn')", ["1", "3"]),
        ("startswith(title,'o''b')", ["2"]),
        ("endswith(title,'SLOW')", ["3"]),
        ("contains(description,'vpn')", ["3"]),
        ("description eq null", ["1"]),
        ("description ne null", ["2", "3"]),
        (f"_subjectid_value eq {SUBJECT.upper()}", ["1"]),
        ("_subjectid_value eq null", ["2", "3"]),
        ("createdon ge 2026-01-02T10:00:00Z", ["2", "3"]),
        ("createdon lt 2026-01-02", ["1"]),
        ("createdon gt 2026-01-02T11:00:00+01:00", ["3"]),  # 10:00Z is not after itself
    ],
)
def test_filter_matches(expr: str, expected: list[str]) -> None:
    assert ids(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "not prioritycode eq 1",
        "prioritycode in (1,2)",
        "prioritycode eq 1 and",
        "prioritycode eq '1'",
        "title eq 1",
        "prioritycode eq 1.5",
        "1 eq prioritycode",
        "substringof('x',title)",
        "contains(prioritycode,'1')",
        "prioritycode gt null",
        "_subjectid_value gt " + SUBJECT,
        "createdon ge 'yesterday'",
        "title eq 'unterminated",
        "Microsoft.Dynamics.CRM.Today(PropertyName='createdon')",
        "prioritycode add 1 eq 2",
        "",
    ],
)
def test_filter_refuses_what_it_does_not_implement(expr: str) -> None:
    with pytest.raises(ODataError) as info:
        parse_filter(INC, expr)
    assert info.value.code == "0x80060888" and info.value.status == 400


def test_unknown_columns_are_named() -> None:
    with pytest.raises(ValidationError, match="Could not find a property named 'impact'"):
        parse_filter(INC, "impact eq 1")
    with pytest.raises(ValidationError, match="'nope'"):
        parse_select(INC, "title,nope")
    with pytest.raises(ValidationError, match="'nope'"):
        parse_orderby(INC, "nope desc")
    with pytest.raises(ODataError):
        parse_orderby(INC, "title sideways")


def test_orderby_several_keys_with_nulls_first_ascending() -> None:
    order = parse_orderby(INC, "statecode asc, _subjectid_value asc, createdon desc")
    assert [r["incidentid"] for r in sort_rows(ROWS, order, "incidentid")] == ["2", "1", "3"]
    desc = parse_orderby(INC, "_subjectid_value desc,incidentid asc")
    assert [r["incidentid"] for r in sort_rows(ROWS, desc, "incidentid")] == ["1", "2", "3"]


@given(st.text(max_size=30))
def test_string_literals_round_trip_through_quote_escaping(text: str) -> None:
    quoted = "'" + text.replace("'", "''") + "'"
    row = {"incidentid": "x", "title": text}
    assert parse_filter(INC, f"title eq {quoted}")(row)
