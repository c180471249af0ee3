"""read_page on both platforms against `responses`: exactly one GET, the page's shape, refusals."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from pydantic import SecretStr

from connectors.base import RecordPage
from connectors.servicenow import ServiceNowConnector
from domain.errors import RejectedError
from domain.settings import ServiceNowSettings
from tests.connectors.conftest import INSTANCE
from tests.connectors.test_dataverse import API, CASE, SUBJECT, make

TABLE_URL = f"{INSTANCE}/api/now/table/incident"
SN_QUERY = (
    "active=true^categoryISEMPTY^sys_created_on>=2024-01-01 00:00:00"
    "^ORDERBYsys_created_on^ORDERBYsys_id"
)
DV_LIST = re.compile(rf"{re.escape(API)}/incidents\?.*")
NEXT = f"{API}/incidents?$select=incidentid,title&$skiptoken=%3Ccookie%20pagenumber=%222%22/%3E"


def sid(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def sn(http_settings, clock) -> ServiceNowConnector:
    settings = ServiceNowSettings(
        instance_url=INSTANCE, auth="basic", username="svc", password=SecretStr("pw")
    )
    return ServiceNowConnector(
        settings, http_settings, sleep=clock.sleep, now=clock.now, monotonic=clock.monotonic
    )


@pytest.fixture
def dv(http_settings, clock, tokens):
    return make(http_settings, clock, tokens)


@pytest.fixture
def tokens():
    from tests.connectors.test_dataverse import StubTokens

    return StubTokens()


def rows(*ns: int) -> dict[str, object]:
    return {"result": [{"sys_id": sid(n), "category": "", "sys_mod_count": "0"} for n in ns]}


# ---- ServiceNow ----------------------------------------------------------------------------


def test_sn_read_page_is_one_get_with_the_verbatim_query_and_no_offset(rsps, sn):
    rsps.get(TABLE_URL, json=rows(1, 2, 3))
    page = sn.read_page("incident", SN_QUERY, ["category", "sys_mod_count"], limit=3)
    assert len(rsps.calls) == 1
    params = parse_qs(urlsplit(rsps.calls[0].request.url).query)
    assert params["sysparm_query"] == [SN_QUERY]  # not re-ordered, nothing appended
    assert params["sysparm_limit"] == ["3"]
    assert params["sysparm_fields"] == ["sys_id,category,sys_mod_count"]
    assert params["sysparm_display_value"] == ["false"]
    assert "sysparm_offset" not in params
    assert isinstance(page, RecordPage) and page.cursor is None
    assert [r.record_id for r in page.records] == [sid(1), sid(2), sid(3)]
    assert page.records[0].fields["sys_mod_count"] == "0"


def test_sn_more_reflects_a_full_page(rsps, sn):
    rsps.get(TABLE_URL, json=rows(1, 2, 3))
    rsps.get(TABLE_URL, json=rows(4, 5))
    rsps.get(TABLE_URL, json=rows())
    assert sn.read_page("incident", SN_QUERY, ["category"], limit=3).more is True
    short = sn.read_page("incident", SN_QUERY, ["category"], limit=3)
    assert short.more is False and len(short.records) == 2
    empty = sn.read_page("incident", SN_QUERY, ["category"], limit=3)
    assert empty.more is False and empty.records == []


@pytest.mark.parametrize(
    ("query", "extra"),
    [
        ("active=true^categoryISEMPTY", {}),  # no ORDERBY: a page could not be resumed
        ("", {}),
        (SN_QUERY, {"cursor": "https://acme.service-now.com/next"}),
        (SN_QUERY, {"order": "sys_id"}),
        (SN_QUERY, {"limit": 0}),
        (SN_QUERY + "\n", {}),
    ],
)
def test_sn_read_page_refuses_what_cannot_be_resumed_before_any_request(rsps, sn, query, extra):
    kwargs = {"limit": 10, **extra}
    with pytest.raises(RejectedError):
        sn.read_page("incident", query, ["category"], **kwargs)
    assert len(rsps.calls) == 0


def test_sn_orderbydesc_counts_as_an_order(rsps, sn):
    rsps.get(TABLE_URL, json=rows(1))
    page = sn.read_page("incident", "active=true^ORDERBYDESCsys_updated_on", ["category"], limit=5)
    assert [r.record_id for r in page.records] == [sid(1)] and page.more is False


# ---- Dataverse -----------------------------------------------------------------------------


def test_dv_read_page_without_cursor_selects_filters_orders_and_sets_the_page_size(rsps, dv):
    rsps.get(
        DV_LIST,
        json={
            "value": [
                {"@odata.etag": 'W/"7"', "incidentid": CASE, "title": "a", "title@x.y": "z"},
                {"@odata.etag": 'W/"8"', "incidentid": SUBJECT, "title": "b"},
            ],
            "@odata.nextLink": NEXT,
        },
    )
    page = dv.read_page("incident", "casetypecode eq null", ["title"], limit=2)
    (request,) = (c.request for c in rsps.calls)
    assert unquote(request.url) == (
        f"{API}/incidents?$select=incidentid,title&$filter=casetypecode eq null"
        "&$orderby=createdon asc,incidentid asc"
    )
    assert request.headers["Prefer"] == "odata.maxpagesize=2"
    assert request.headers["If-None-Match"] == "null"
    assert [(r.record_id, r.etag) for r in page.records] == [(CASE, 'W/"7"'), (SUBJECT, 'W/"8"')]
    assert page.records[0].fields == {"incidentid": CASE, "title": "a"}
    assert page.cursor == NEXT and page.more is True


def test_dv_read_page_with_cursor_gets_it_unchanged_and_ends_without_next_link(rsps, dv):
    rsps.get(re.compile(r".*skiptoken.*"), json={"value": [{"incidentid": CASE}]})
    page = dv.read_page(
        "incident", "ignored", ["title"], limit=2, cursor=NEXT, order="modifiedon asc"
    )
    (request,) = (c.request for c in rsps.calls)
    assert request.url == NEXT  # not re-encoded, nothing appended
    assert request.headers["Prefer"] == "odata.maxpagesize=2"
    assert page.cursor is None and page.more is False
    assert [r.record_id for r in page.records] == [CASE] and page.records[0].etag is None


def test_dv_read_page_takes_an_explicit_order_and_an_empty_filter(rsps, dv):
    rsps.get(DV_LIST, json={"value": []})
    page = dv.read_page(
        "incident", "", ["title"], limit=5000, order="modifiedon asc,incidentid asc"
    )
    assert unquote(rsps.calls[0].request.url) == (
        f"{API}/incidents?$select=incidentid,title&$orderby=modifiedon asc,incidentid asc"
    )
    assert page == RecordPage([], more=False, cursor=None)


@pytest.mark.parametrize(
    "cursor",
    [
        "https://evil.example/api/data/v9.2/incidents?$skiptoken=x",  # another host
        "http://acme.crm.dynamics.com/api/data/v9.2/incidents?$skiptoken=x",  # another scheme
        f"{API}/annotations?$skiptoken=x",  # another entity set
        f"{API}/incidents(00000000-0000-4000-8000-000000000001)?$skiptoken=x",
        "https://acme.crm.dynamics.com/api/data/v9.1/incidents?$skiptoken=x",
    ],
)
def test_dv_a_foreign_cursor_is_refused_before_any_request(rsps, dv, cursor):
    with pytest.raises(RejectedError):
        dv.read_page("incident", "", ["title"], limit=10, cursor=cursor)
    assert len(rsps.calls) == 0


def test_dv_a_foreign_next_link_in_the_answer_is_refused(rsps, dv):
    rsps.get(DV_LIST, json={"value": [], "@odata.nextLink": f"{API}/emails?$skiptoken=x"})
    with pytest.raises(RejectedError, match="not a page of this query"):
        dv.read_page("incident", "", ["title"], limit=10)


@pytest.mark.parametrize(
    "extra", [{"limit": 0}, {"limit": 5001}, {"order": "title; drop"}, {"query": "a\x00"}]
)
def test_dv_bad_page_requests_are_refused(rsps, dv, extra):
    args = {"query": "", "limit": 10, **extra}
    query = args.pop("query")
    with pytest.raises(RejectedError):
        dv.read_page("incident", query, ["title"], **args)
    assert len(rsps.calls) == 0
