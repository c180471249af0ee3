"""ServiceNowConnector: URLs, sysparm_* parameters, envelopes, paging and choices."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from pydantic import SecretStr
from responses import matchers

import connectors
from connectors.servicenow import ServiceNowConnector, build_servicenow_connector, stable_order
from domain.errors import (
    ConfigError,
    NotFoundError,
    RejectedError,
    UnavailableError,
)
from domain.settings import ServiceNowSettings, Settings
from tests.connectors.conftest import INSTANCE

SYS_ID = "d977b66a4f411200adf9f8e18110c7b2"
TABLE = f"{INSTANCE}/api/now/table"
RAW = {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true"}
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


def sid(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def sn_settings() -> ServiceNowSettings:
    return ServiceNowSettings(
        instance_url=INSTANCE,
        auth="basic",
        username="svc_enricher",
        password=SecretStr("pw"),
        page_size=2,
    )


@pytest.fixture
def sn(sn_settings, http_settings, clock) -> ServiceNowConnector:
    return ServiceNowConnector(
        sn_settings,
        http_settings,
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
    )


def params(**extra: str) -> list[Any]:
    return [matchers.query_param_matcher({**RAW, **extra}), matchers.header_matcher(JSON_HEADERS)]


def test_get_sends_raw_value_params_and_returns_the_record(rsps, sn):
    record = {"sys_id": SYS_ID, "short_description": "VPN down", "impact": "3"}
    rsps.get(
        f"{TABLE}/incident/{SYS_ID}",
        json={"result": record},
        match=params(sysparm_fields="sys_id,short_description,impact"),
    )
    got = sn.get("incident", SYS_ID, ["sys_id", "short_description", "impact"])
    assert got.system == "servicenow"
    assert (got.table, got.record_id) == ("incident", SYS_ID)
    assert dict(got.fields) == record
    assert got.etag is None
    assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_get_missing_record_is_not_found(rsps, sn):
    rsps.get(
        f"{TABLE}/incident/{SYS_ID}",
        status=404,
        json={"error": {"message": "No Record found", "detail": "ACL"}, "status": "failure"},
    )
    with pytest.raises(NotFoundError, match="No Record found"):
        sn.get("incident", SYS_ID, ["number"])


def test_update_patches_changes_and_asks_for_them_back(rsps, sn):
    changes = {"category": "network", "work_notes": "[AI_ENRICH] category set"}
    stored = {
        "category": "network",
        "work_notes": "",
        "sys_id": SYS_ID,
        "sys_updated_by": "svc_enricher",
        "sys_updated_on": "2024-05-01 10:00:00",
        "sys_mod_count": "4",
    }
    rsps.patch(
        f"{TABLE}/incident/{SYS_ID}",
        json={"result": stored},
        match=[
            *params(
                sysparm_fields="category,work_notes,sys_id,sys_updated_by,sys_updated_on,sys_mod_count"
            ),
            matchers.json_params_matcher(changes),
        ],
    )
    got = sn.update("incident", SYS_ID, changes)
    assert dict(got.fields) == stored
    assert got.record_id == SYS_ID


def test_update_is_not_retried_after_a_5xx(rsps, sn, clock):
    rsps.patch(f"{TABLE}/incident/{SYS_ID}", status=503)
    with pytest.raises(UnavailableError):
        sn.update("incident", SYS_ID, {"work_notes": "note"})
    assert clock.waits == []


def test_update_without_changes_is_rejected(sn):
    with pytest.raises(RejectedError, match="no changes"):
        sn.update("incident", SYS_ID, {})


@pytest.mark.parametrize(
    ("table", "record_id"),
    [
        ("incident/../sys_user", SYS_ID),
        ("Incident", SYS_ID),
        ("incident?x=1", SYS_ID),
        ("incident", SYS_ID.upper()),
        ("incident", SYS_ID[:-1]),
        ("incident", f"{SYS_ID[:-1]}/"),
        ("incident", "d977b66a-4f41-1200-adf9-f8e18110c7b2"),
    ],
)
def test_bad_table_or_sys_id_is_rejected_before_any_request(rsps, sn, table, record_id):
    with pytest.raises(RejectedError, match="invalid"):
        sn.get(table, record_id, ["number"])
    with pytest.raises(RejectedError, match="invalid"):
        sn.update(table, record_id, {"state": "2"})
    assert len(rsps.calls) == 0


@pytest.mark.parametrize("field", ["number^ORDERBYx", "a,b", "state=1", ""])
def test_bad_field_name_is_rejected(rsps, sn, field):
    with pytest.raises(RejectedError, match="invalid field"):
        sn.get("incident", SYS_ID, [field])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"body": "<html>Your instance is hibernating</html>", "content_type": "text/html"},
         UnavailableError, "expected JSON.*text/html"),
        ({"json": {"records": []}}, RejectedError, "result envelope"),
        ({"json": {"result": ["not", "a", "record"]}}, RejectedError, "result envelope"),
    ],
)  # fmt: skip
def test_unexpected_body_is_a_clear_error(rsps, sn, kwargs, error, match):
    rsps.get(f"{TABLE}/incident/{SYS_ID}", headers={"X-Transaction-ID": "tx-3"}, **kwargs)
    with pytest.raises(error, match=match) as info:
        sn.get("incident", SYS_ID, ["number"])
    assert info.value.request_id == "tx-3"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "ORDERBYsys_id"),
        ("active=true", "active=true^ORDERBYsys_id"),
        (
            "sys_updated_on>=2024-01-01 00:00:00^ORDERBYsys_updated_on",
            "sys_updated_on>=2024-01-01 00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id",
        ),
        ("active=true^ORDERBYDESCnumber", "active=true^ORDERBYDESCnumber^ORDERBYsys_id"),
        ("active=true^ORDERBYsys_id", "active=true^ORDERBYsys_id"),
        ("ORDERBYDESCsys_id", "ORDERBYDESCsys_id"),
        ("active=true^ORDERBYsys_idx", "active=true^ORDERBYsys_idx^ORDERBYsys_id"),
    ],
)
def test_stable_order(query, expected):
    assert stable_order(query) == expected


def page_params(offset: int, query: str = "active=true^ORDERBYsys_id") -> dict[str, str]:
    return {
        **RAW,
        "sysparm_fields": "sys_id,number",
        "sysparm_query": query,
        "sysparm_limit": "2",
        "sysparm_offset": str(offset),
    }


def rows(*ns: int) -> dict[str, object]:
    return {"result": [{"sys_id": sid(n), "number": f"INC{n:07d}"} for n in ns]}


def link_header(offset: int | None, *, host: str = INSTANCE) -> str:
    first = f'<{host}/api/now/table/incident?{urlencode(page_params(0))}>;rel="first"'
    if offset is None:
        return first
    return f'{first},<{host}/api/now/table/incident?{urlencode(page_params(offset))}>;rel="next"'


def test_iter_records_follows_link_next(rsps, sn):
    url = f"{TABLE}/incident"
    rsps.get(
        url,
        json=rows(1, 2),
        headers={"Link": link_header(2), "X-Total-Count": "3"},
        match=[matchers.query_param_matcher(page_params(0))],
    )
    # A full page but no rel="next": the Link header says this is the last page.
    rsps.get(
        url,
        json=rows(3, 4),
        headers={"Link": link_header(None)},
        match=[matchers.query_param_matcher(page_params(2))],
    )
    got = list(sn.iter_records("incident", "active=true", ["number"]))
    assert [r.record_id for r in got] == [sid(1), sid(2), sid(3), sid(4)]
    assert rsps.calls[1].request.url == f"{url}?{urlencode(page_params(2))}"
    assert got[0].fields["number"] == "INC0000001"


def test_iter_records_pages_by_offset_without_link_until_a_short_page(rsps, sn):
    url = f"{TABLE}/incident"
    for offset, page in ((0, rows(1, 2)), (2, rows(3, 4)), (4, rows(5))):
        rsps.get(url, json=page, match=[matchers.query_param_matcher(page_params(offset))])
    got = [r.record_id for r in sn.iter_records("incident", "active=true", ["number"])]
    assert got == [sid(n) for n in range(1, 6)]


def test_iter_records_stops_on_an_empty_page_and_dedupes(rsps, sn):
    url = f"{TABLE}/incident"
    for offset, page in ((0, rows(1, 2)), (2, rows(2, 3)), (4, rows())):
        rsps.get(url, json=page, match=[matchers.query_param_matcher(page_params(offset))])
    got = [r.record_id for r in sn.iter_records("incident", "active=true", ["number"])]
    assert got == [sid(1), sid(2), sid(3)]


def test_iter_records_never_follows_a_link_off_the_instance(rsps, sn):
    url = f"{TABLE}/incident"
    evil = link_header(2, host="https://evil.example.com")
    rsps.get(url, json=rows(1, 2), headers={"Link": evil}, match=[_q(page_params(0))])
    rsps.get(url, json=rows(3), match=[_q(page_params(2))])
    got = [r.record_id for r in sn.iter_records("incident", "active=true", ["number"])]
    assert got == [sid(1), sid(2), sid(3)]


def test_iter_records_keeps_the_callers_order_with_a_sys_id_tiebreak(rsps, sn):
    query = "active=true^ORDERBYsys_updated_on^ORDERBYsys_id"
    rsps.get(f"{TABLE}/incident", json=rows(1), match=[_q(page_params(0, query))])
    list(sn.iter_records("incident", "active=true^ORDERBYsys_updated_on", ["number"]))


def test_iter_records_row_without_sys_id_is_an_error(rsps, sn):
    rsps.get(f"{TABLE}/incident", json={"result": [{"number": "INC1"}]})
    with pytest.raises(UnavailableError, match="without sys_id"):
        list(sn.iter_records("incident", "", ["number"]))


def _q(expected: dict[str, str]):
    return matchers.query_param_matcher(expected)


def test_list_choices_query_and_task_inheritance(rsps, sn):
    query = (
        "nameINincident,task^elementINcategory,subcategory^inactive=false^language=en"
        "^ORDERBYelement^ORDERBYsequence^ORDERBYsys_id"
    )
    choice_rows = [
        {"sys_id": sid(1), "name": "incident", "element": "category", "value": "network",
         "label": "Network", "dependent_value": ""},
        {"sys_id": sid(2), "name": "task", "element": "category", "value": "facilities",
         "label": "Facilities", "dependent_value": ""},
        {"sys_id": sid(3), "name": "task", "element": "subcategory", "value": "vpn",
         "label": "VPN", "dependent_value": "network"},
    ]  # fmt: skip
    fields = "sys_id,name,element,value,label,dependent_value"
    for offset, page in ((0, choice_rows[:2]), (2, choice_rows[2:])):
        rsps.get(
            f"{TABLE}/sys_choice",
            json={"result": page},
            match=params(
                sysparm_fields=fields,
                sysparm_query=query,
                sysparm_limit="2",
                sysparm_offset=str(offset),
            ),
        )
    # incident defines its own category choices, so task's "facilities" is dropped; it defines
    # no subcategory choices, so task's are inherited.
    choices = sn.list_choices("incident", ["category", "subcategory"])
    assert choices == [
        {"element": "category", "value": "network", "label": "Network", "dependent_value": ""},
        {"element": "subcategory", "value": "vpn", "label": "VPN", "dependent_value": "network"},
    ]


def test_journal_reads_sys_journal_field_for_one_record(rsps, sn):
    entry = {
        "sys_id": sid(9),
        "element": "work_notes",
        "value": "[AI_ENRICH] set category",
        "sys_created_on": "2024-05-01 10:00:00",
        "sys_created_by": "svc_enricher",
    }
    rsps.get(
        f"{TABLE}/sys_journal_field",
        json={"result": [entry]},
        match=[
            _q(
                {
                    **RAW,
                    "sysparm_fields": "sys_id,element,value,sys_created_on,sys_created_by",
                    "sysparm_query": f"element_id={SYS_ID}^element=work_notes"
                    "^ORDERBYsys_created_on^ORDERBYsys_id",
                    "sysparm_limit": "2",
                    "sysparm_offset": "0",
                }
            )
        ],
    )
    assert sn.journal(SYS_ID) == [entry]


def test_build_requires_servicenow_settings():
    with pytest.raises(ConfigError, match="ServiceNow is not configured"):
        build_servicenow_connector(Settings(servicenow=None))


def test_built_oauth_connector_fetches_a_token_then_calls_with_bearer(rsps):
    settings = Settings(
        servicenow=ServiceNowSettings(
            instance_url=INSTANCE,
            auth="oauth",
            client_id="cid",
            client_secret=SecretStr("csecret"),
        )
    )
    rsps.post(f"{INSTANCE}/oauth_token.do", json={"access_token": "tok", "expires_in": 1799})
    rsps.get(
        f"{TABLE}/incident/{SYS_ID}",
        json={"result": {"sys_id": SYS_ID}},
        match=[matchers.header_matcher({"Authorization": "Bearer tok"})],
    )
    rsps.get(
        f"{TABLE}/incident/{SYS_ID}",
        json={"result": {"sys_id": SYS_ID}},
        match=[matchers.header_matcher({"Authorization": "Bearer tok"})],
    )
    sn = build_servicenow_connector(settings)
    sn.get("incident", SYS_ID, ["sys_id"])
    sn.get("incident", SYS_ID, ["sys_id"])
    sn.close()
    assert [c.request.req_kwargs["timeout"] for c in rsps.calls] == [(3.05, 20.0)] * 3


class RecordingSession(requests.Session):
    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_connector_uses_a_given_session_and_leaves_it_open(rsps, sn_settings, http_settings):
    session = RecordingSession()
    session.headers["User-Agent"] = "ticket-enrichment/test"
    rsps.get(f"{TABLE}/incident/{SYS_ID}", json={"result": {"sys_id": SYS_ID}})
    sn = ServiceNowConnector(sn_settings, http_settings, session=session)
    sn.get("incident", SYS_ID, ["sys_id"])
    sn.close()
    assert rsps.calls[0].request.headers["User-Agent"] == "ticket-enrichment/test"
    assert session.closed is False  # the caller owns a session it passed in


def test_package_exports():
    assert sorted(connectors.__all__) == [
        "Connector",
        "DataverseConnector",
        "MsalTokenProvider",
        "ServiceNowConnector",
        "ServiceNowOAuth",
        "SourceRecord",
        "TokenProvider",
        "build_dataverse_connector",
        "build_servicenow_connector",
    ]
    for name in connectors.__all__:
        assert getattr(connectors, name) is not None
