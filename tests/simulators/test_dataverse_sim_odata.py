"""The simulator's ``$filter`` / ``$orderby`` / ``$select`` subset: what matches, what is refused;
and its paging cookie: a keyset position, as Dataverse's."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.simulators import FakeClock
from tests.simulators.dataverse_api import Call, WebApi
from tests.simulators.dataverse_odata import (
    ODataError,
    parse_filter,
    parse_orderby,
    parse_select,
    sort_rows,
)
from tests.simulators.dataverse_schema import SCHEMAS, ValidationError
from tests.simulators.dataverse_store import Store

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


# ---- paging: a keyset cookie, as Dataverse's (last row's order values and key) -------------

USER = "a1a1a1a1-0000-4000-8000-0000000000aa"


def _web_api() -> WebApi:
    return WebApi(Store(FakeClock()), lambda: "https://sim.example", (str(uuid.uuid4()),) * 2)


def _add(api: WebApi, **fields: Any) -> str:
    values = {"_customerid_value": str(uuid.uuid4()), **fields}
    rec, _ = api.store.write("incidents", None, values, USER, validate=False)
    return str(rec["incidentid"])


def _page(api: WebApi, url: str, size: int) -> tuple[list[str], str | None]:
    split = urlsplit(url)
    query = dict(parse_qsl(split.query, keep_blank_values=True))
    headers = {"prefer": f"odata.maxpagesize={size}"}
    resp = api.execute(Call(USER, "GET", "incidents", query, headers, b""))
    assert resp.status == 200, resp.body
    body = resp.body
    assert isinstance(body, dict)
    return [row["incidentid"] for row in body["value"]], body.get("@odata.nextLink")


def _first(filter_: str | None, order: str) -> str:
    query = {"$select": "incidentid,casetypecode", "$orderby": order}
    if filter_ is not None:
        query["$filter"] = filter_
    return "https://sim.example/api/data/v9.2/incidents?" + urlencode(query)


def test_filling_the_filtered_column_between_pages_skips_no_row() -> None:
    api = _web_api()
    # Two rows share each createdon, so the key breaks ties inside the order.
    ids = [_add(api, title=f"t{n}", createdon=f"2026-01-01T10:{n // 2:02d}:00Z") for n in range(10)]
    order = "createdon asc,incidentid asc"
    expected = [r["incidentid"] for r in sort_rows(
        [api.store.tables["incidents"][i] for i in ids], parse_orderby(INC, order), "incidentid"
    )]  # fmt: skip
    seen, link = _page(api, _first("casetypecode eq null", order), 3)
    while link is not None:
        for record_id in seen[-3:]:  # the backfill fills what selected the rows it just read
            api.store.write("incidents", record_id, {"casetypecode": 1}, USER, validate=False)
        more, link = _page(api, link, 3)
        seen += more
    # An offset cookie would skip the 3 rows after each filled page.
    assert seen == expected and len(set(seen)) == 10


def test_rows_added_between_pages_count_only_after_the_cookie() -> None:
    api = _web_api()
    for n in range(4):
        _add(api, title=f"t{n}", createdon=f"2026-01-01T10:0{n * 2}:00Z")
    seen, link = _page(api, _first(None, "createdon asc,incidentid asc"), 2)
    before = _add(api, title="early", createdon="2026-01-01T10:01:00Z")
    later = _add(api, title="late", createdon="2026-01-01T10:09:00Z")
    assert link is not None
    more, link = _page(api, link, 2)
    while link is not None:
        page, link = _page(api, link, 2)
        more += page
    assert before not in more and more[-1] == later and len(seen + more) == 5


@pytest.mark.parametrize(
    "order",
    ["title desc,createdon asc", "_subjectid_value asc", "prioritycode desc", "title asc"],
)
def test_pages_in_any_order_with_nulls_and_ties_equal_the_sorted_rows(order: str) -> None:
    api = _web_api()
    titles = ["b", None, "A", "a", None, "c", "B"]
    for n, title in enumerate(titles):
        subject = SUBJECT if n % 3 == 0 else None
        _add(api, title=title, prioritycode=1 + n % 2, _subjectid_value=subject,
             createdon=f"2026-01-0{1 + n % 3}T10:00:00Z")  # fmt: skip
    rows = list(api.store.tables["incidents"].values())
    expected = [r["incidentid"] for r in sort_rows(rows, parse_orderby(INC, order), "incidentid")]
    seen, link = _page(api, _first(None, order), 2)
    while link is not None:
        more, link = _page(api, link, 2)
        seen += more
    assert seen == expected
