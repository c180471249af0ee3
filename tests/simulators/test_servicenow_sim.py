"""The ServiceNow simulator behaves like the Table API as documented (plain requests, loopback)."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import requests

from tests.simulators import DEFAULT_EPOCH
from tests.simulators.servicenow import RateLimitRule, ServiceNowSimulator

TABLE = "/api/now/table/incident"
AUTH = ("admin", "pw")
CLIENT_SECRET = "csecret"  # as in conftest.py
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def get(http: requests.Session, sim: ServiceNowSimulator, path: str, **params: Any) -> Any:
    resp = http.get(sim.url + path, params=params, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["result"]


def stored(sim: ServiceNowSimulator, sys_id: str) -> dict[str, str]:
    rec = sim.get_record("incident", sys_id)
    assert rec is not None
    return rec


def numbers(result: list[dict[str, Any]]) -> list[str]:
    return [row["number"] for row in result]


@pytest.fixture
def seeded(sim: ServiceNowSimulator) -> dict[str, str]:
    """Four incidents with distinct fields; returns number -> sys_id."""
    rows = [
        dict(short_description="VPN down", category="network", subcategory="vpn", impact="1"),
        dict(short_description="Printer jam", category="hardware", impact="2"),
        dict(short_description="Printer VPN?", category="inquiry", impact="3"),
        dict(short_description="DB slow", category="database", subcategory="oracle", impact="2"),
    ]
    ids = {}
    for day, row in enumerate(rows, start=1):
        sys_id = sim.add_record("incident", {**row, "sys_updated_on": f"2026-01-0{day} 12:00:00"})
        ids[stored(sim, sys_id)["number"]] = sys_id
    return ids


def test_envelopes_numbers_and_transaction_id(sim, http, seeded):
    resp = http.get(sim.url + TABLE, timeout=5)
    assert resp.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{12}", resp.headers["X-Transaction-ID"])
    result = resp.json()["result"]
    assert numbers(result) == ["INC0010001", "INC0010002", "INC0010003", "INC0010004"]
    one = get(http, sim, f"{TABLE}/{seeded['INC0010002']}")
    assert one["sys_id"] == seeded["INC0010002"]
    assert re.fullmatch(r"[0-9a-f]{32}", one["sys_id"])
    assert one["priority"] == "4"  # computed from impact 2 x default urgency 3


def test_missing_record_and_bad_uri(sim, http):
    resp = http.get(f"{sim.url}{TABLE}/{'0' * 32}", timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {
            "message": "No Record found",
            "detail": "Record doesn't exist or ACL restricts the record retrieval",
        },
        "status": "failure",
    }
    assert http.get(sim.url + "/api/now/table/no_such_table", timeout=5).status_code == 400
    assert http.get(sim.url + "/api/nothing", timeout=5).status_code == 400


@pytest.mark.parametrize("auth", [None, ("admin", "wrong"), ("nobody", "pw")])
def test_unauthenticated_requests_get_401(sim, auth):
    resp = requests.get(sim.url + TABLE, auth=auth, timeout=5)
    assert resp.status_code == 401
    assert resp.json()["error"] == {
        "message": "User is not authenticated",
        "detail": "Required to provide Auth information",
    }
    assert resp.json()["status"] == "failure"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("category=network", ["INC0010001"]),
        ("category!=network", ["INC0010002", "INC0010003", "INC0010004"]),
        ("categoryINnetwork,database", ["INC0010001", "INC0010004"]),
        ("short_descriptionLIKEvpn", ["INC0010001", "INC0010003"]),
        ("short_descriptionSTARTSWITHprinter", ["INC0010002", "INC0010003"]),
        ("subcategoryISEMPTY", ["INC0010002", "INC0010003"]),
        ("subcategoryISNOTEMPTY", ["INC0010001", "INC0010004"]),
        ("impact<2", ["INC0010001"]),
        ("impact>=2^impact<=2", ["INC0010002", "INC0010004"]),
        ("sys_updated_on>2026-01-02 12:00:00", ["INC0010003", "INC0010004"]),
        ("sys_updated_on>=javascript:gs.dateGenerate('2026-01-04','12:00:00')", ["INC0010004"]),
        ("no_such_field=1^category=network", ["INC0010001"]),  # unknown field: ignored
        ("no_such_field=1", ["INC0010001", "INC0010002", "INC0010003", "INC0010004"]),
        ("category=network^ORcategory=hardware", ["INC0010001", "INC0010002"]),
        ("category=network^ORno_such_field=x", ["INC0010001"]),
        ("category=network^NQimpact=2^subcategory=oracle", ["INC0010001", "INC0010004"]),
        ("category=network^ORcategory=hardware^impact=2", ["INC0010002"]),
    ],
)
def test_encoded_query_operators(sim, http, seeded, query, expected):
    assert numbers(get(http, sim, TABLE, sysparm_query=query)) == expected


def test_orderby_and_orderbydesc(sim, http, seeded):
    result = get(http, sim, TABLE, sysparm_query="ORDERBYDESCsys_updated_on")
    assert numbers(result) == ["INC0010004", "INC0010003", "INC0010002", "INC0010001"]
    result = get(http, sim, TABLE, sysparm_query="impact>1^ORDERBYimpact^ORDERBYDESCnumber")
    assert numbers(result) == ["INC0010004", "INC0010002", "INC0010003"]


def test_unsupported_operator_is_loud(sim, http, seeded):
    resp = http.get(sim.url + TABLE, params={"sysparm_query": "impactBETWEEN1@2"}, timeout=5)
    assert resp.status_code == 400
    assert "BETWEEN" in resp.json()["error"]["detail"]
    assert len(sim.errors) == 1
    sim.errors.clear()


@pytest.fixture
def people(sim: ServiceNowSimulator) -> dict[str, str]:
    """Users, a group and four incidents referencing them; returns name -> sys_id."""
    ids = {"beth": sim.add_record("sys_user", {"user_name": "beth.anglin", "name": "Beth"})}
    ids["abel"] = sim.add_record(
        "sys_user", {"user_name": "abel.tuter", "name": "Abel", "manager": ids["beth"]}
    )
    ids["carl"] = sim.add_record("sys_user", {"user_name": "carl.lee", "name": "Carl"})
    ids["net"] = sim.add_record("sys_user_group", {"name": "Network", "manager": ids["carl"]})
    rows = [
        {"caller_id": ids["abel"], "category": "network"},  # INC0010001
        {"caller_id": ids["beth"], "assignment_group": ids["net"]},  # INC0010002
        {"category": "hardware"},  # INC0010003: no caller
        {"caller_id": ids["carl"], "assigned_to": ids["abel"]},  # INC0010004
    ]
    for row in rows:
        sim.add_record("incident", row)
    return ids


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("caller_id.user_name=abel.tuter", ["INC0010001"]),
        ("caller_id.user_nameSTARTSWITHb^ORassignment_group.name=Network", ["INC0010002"]),
        ("caller_id.user_name!=abel.tuter^caller_idISNOTEMPTY", ["INC0010002", "INC0010004"]),
        ("caller_id.manager.user_name=beth.anglin", ["INC0010001"]),  # two levels
        ("assigned_to.manager.name=Beth", ["INC0010004"]),
        ("assignment_group.manager.user_name=carl.lee", ["INC0010002"]),
        ("caller_id.nameISEMPTY", ["INC0010003"]),  # an empty reference reaches ""
        ("caller_id.no_such_field=x^category=hardware", ["INC0010003"]),  # unknown leaf: ignored
    ],
)
def test_dot_walked_conditions_filter_through_references(sim, http, people, query, expected):
    assert numbers(get(http, sim, TABLE, sysparm_query=query)) == expected


def test_orderby_dot_walked_field(sim, http, people):
    query = "caller_idISNOTEMPTY^ORDERBYDESCcaller_id.user_name"
    assert numbers(get(http, sim, TABLE, sysparm_query=query)) == [
        "INC0010004", "INC0010002", "INC0010001",
    ]  # fmt: skip


def refused(sim: ServiceNowSimulator, http: requests.Session, **params: str) -> str:
    """Assert a 400 in the Table API error envelope; returns its detail and clears sim.errors."""
    resp = http.get(sim.url + TABLE, params=params, timeout=5)
    assert resp.status_code == 400, resp.text
    assert resp.json()["status"] == "failure"
    assert len(sim.errors) == 1
    sim.errors.clear()
    detail: str = resp.json()["error"]["detail"]
    return detail


@pytest.mark.parametrize(
    "query",
    [
        "short_description.name=x",  # not a reference field
        "caller_id.email.domain=x",  # second step through a plain field
        "category=network^ORDERBYcategory.label",
    ],
)
def test_dot_walk_through_a_non_reference_field_is_refused(sim, http, people, query):
    assert "not a reference field" in refused(sim, http, sysparm_query=query)


@pytest.mark.parametrize(
    ("query", "keyword"),
    [
        ("JOINincident.caller_id=sys_user.sys_id!user_name=abel.tuter", "JOIN"),
        ("RLQUERYtask_sla.task,>=1^sla.name=x^ENDRLQUERY", "RLQUERY"),
        ("SUBQUERYcaller_id,sys_id,sys_user^active=true^ENDSUBQUERY", "SUBQUERY"),
        ("123TEXTQUERY321=printer", "123TEXTQUERY321"),
        ("GOTOcategory=network", "GOTO"),
        ("category=network^ORJOINincident.caller_id=sys_user.sys_id", "JOIN"),
        ("category=network^NQGROUPBYcategory", "GROUPBY"),
        ("(category=network", "cannot read"),
    ],
)
def test_unimplemented_keyword_terms_are_refused(sim, http, people, query, keyword):
    assert keyword in refused(sim, http, sysparm_query=query)


def test_invalid_query_returns_no_rows_switch(clock):
    with ServiceNowSimulator(users={"admin": "pw"}, clock=clock,
                             invalid_query_returns_no_rows=True) as strict:  # fmt: skip
        strict.add_record("incident", {"category": "network"})
        strict.add_record("incident", {"category": "hardware"})
        with requests.Session() as session:
            session.auth = AUTH
            assert numbers(get(session, strict, TABLE, sysparm_query="category=network")) == [
                "INC0010001"
            ]
            for query in ("no_such_field=1^category=network", "caller_id.no_such_field=1",
                          "category=network^ORno_such_field=1"):  # fmt: skip
                assert get(session, strict, TABLE, sysparm_query=query) == []
            # an unknown ORDERBY field selects nothing away: ordering only
            assert len(get(session, strict, TABLE, sysparm_query="ORDERBYno_such_field")) == 2
    assert strict.errors == []


def test_sysparm_fields_dot_walked_values(sim, http, people):
    fields = "number,caller_id.user_name,caller_id.manager.name,assignment_group.name,x.y"
    result = get(http, sim, TABLE, sysparm_fields=fields, sysparm_query="ORDERBYnumber")
    assert result[:3] == [
        {"number": "INC0010001", "caller_id.user_name": "abel.tuter",
         "caller_id.manager.name": "Beth", "assignment_group.name": ""},
        {"number": "INC0010002", "caller_id.user_name": "beth.anglin",
         "caller_id.manager.name": "", "assignment_group.name": "Network"},
        {"number": "INC0010003", "caller_id.user_name": "", "caller_id.manager.name": "",
         "assignment_group.name": ""},
    ]  # fmt: skip
    inc = sim.records("incident")[0]["sys_id"]
    path = f"{TABLE}/{inc}"
    both = get(http, sim, path, sysparm_fields="caller_id.manager,caller_id.name",
               sysparm_display_value="all")  # fmt: skip
    link = f"{sim.url}/api/now/table/sys_user/{people['beth']}"
    assert both == {
        "caller_id.manager": {"display_value": "Beth", "link": link, "value": people["beth"]},
        "caller_id.name": {"display_value": "Abel", "value": "Abel"},
    }


def test_sysparm_fields_through_a_non_reference_is_refused_before_writing(sim, http, people):
    assert "not a reference field" in refused(sim, http, sysparm_fields="number,category.label")
    inc = sim.records("incident")[0]["sys_id"]
    resp = http.patch(f"{sim.url}{TABLE}/{inc}", json={"impact": "1"},
                      params={"sysparm_fields": "impact,impact.label"}, timeout=5)  # fmt: skip
    assert resp.status_code == 400
    sim.errors.clear()
    assert stored(sim, inc)["impact"] == "3"


def test_paging_with_link_and_total_count(sim, http):
    for i in range(5):
        sim.add_record("incident", {"short_description": f"t{i}"})
    url: str | None = sim.url + TABLE + "?sysparm_limit=2&sysparm_query=ORDERBYnumber"
    seen, rels = [], []
    while url:
        resp = http.get(url, timeout=5)
        assert resp.headers["X-Total-Count"] == "5"
        rels.append(sorted(resp.links))
        seen += numbers(resp.json()["result"])
        url = resp.links.get("next", {}).get("url")
    assert seen == [f"INC001000{i}" for i in range(1, 6)]
    assert rels == [
        ["first", "last", "next"],
        ["first", "last", "next", "prev"],
        ["first", "last", "prev"],
    ]
    assert "sysparm_offset=4" in resp.links["last"]["url"]


def test_single_page_and_suppressed_headers(sim, http):
    sim.add_record("incident")
    resp = http.get(sim.url + TABLE, timeout=5)
    assert "Link" not in resp.headers
    assert resp.headers["X-Total-Count"] == "1"
    params = {"sysparm_limit": "1", "sysparm_offset": "1"}
    sim.add_record("incident")
    assert "Link" in http.get(sim.url + TABLE, params=params, timeout=5).headers
    params |= {"sysparm_suppress_pagination_header": "true", "sysparm_no_count": "true"}
    resp = http.get(sim.url + TABLE, params=params, timeout=5)
    assert "Link" not in resp.headers
    assert "X-Total-Count" not in resp.headers
    assert len(resp.json()["result"]) == 1


def test_sysparm_fields_projects_and_skips_unknown(sim, http, seeded):
    result = get(http, sim, TABLE, sysparm_fields="number,category,bogus", sysparm_limit="1")
    assert result == [{"number": "INC0010001", "category": "network"}]


def test_display_value_modes(sim, http, seeded):
    path = f"{TABLE}/{seeded['INC0010003']}"
    fields = "impact,category,short_description"
    raw = get(http, sim, path, sysparm_fields=fields)
    assert raw == {"impact": "3", "category": "inquiry", "short_description": "Printer VPN?"}
    shown = get(http, sim, path, sysparm_fields=fields, sysparm_display_value="true")
    assert shown == {
        "impact": "3 - Low",
        "category": "Inquiry / Help",
        "short_description": "Printer VPN?",
    }
    both = get(http, sim, path, sysparm_fields="impact", sysparm_display_value="all")
    assert both == {"impact": {"display_value": "3 - Low", "value": "3"}}


def test_reference_fields_and_link_exclusion(sim, http):
    user = sim.add_record("sys_user", {"user_name": "abel.tuter", "name": "Abel Tuter"})
    inc = sim.add_record("incident", {"caller_id": user})
    path = f"{TABLE}/{inc}"
    link = f"{sim.url}/api/now/table/sys_user/{user}"
    ref = get(http, sim, path, sysparm_fields="caller_id,assigned_to")
    assert ref == {"caller_id": {"link": link, "value": user}, "assigned_to": ""}
    plain = get(http, sim, path, sysparm_fields="caller_id", sysparm_exclude_reference_link="true")
    assert plain == {"caller_id": user}
    shown = get(http, sim, path, sysparm_fields="caller_id", sysparm_display_value="true")
    assert shown == {"caller_id": {"display_value": "Abel Tuter", "link": link}}
    both = get(
        http, sim, path, sysparm_fields="caller_id", sysparm_display_value="all",
        sysparm_exclude_reference_link="true",
    )  # fmt: skip
    assert both == {"caller_id": {"display_value": "Abel Tuter", "value": user}}


def test_patch_recomputes_priority_and_maintains_system_fields(sim, http, clock, seeded):
    sys_id = seeded["INC0010003"]
    writes: list[tuple[str, str, str, str]] = []
    sim.on_write(lambda table, rec, op, user: writes.append((table, rec["priority"], op, user)))
    clock.advance(90)
    body = {"impact": "1", "urgency": "2", "priority": "5", "u_bogus": "x", "category": "Nonsense"}
    resp = http.patch(f"{sim.url}{TABLE}/{sys_id}", json=body, timeout=5)
    assert resp.status_code == 200
    result = resp.json()["result"]
    assert (result["priority"], result["category"]) == ("2", "Nonsense")  # stored as given
    assert result["sys_mod_count"] == "1"
    assert result["sys_updated_by"] == "admin"
    assert result["sys_updated_on"] == "2026-01-01 00:01:30"
    assert "u_bogus" not in stored(sim, sys_id)
    assert writes == [("incident", "2", "update", "admin")]
    same = http.patch(f"{sim.url}{TABLE}/{sys_id}", json={"impact": "1"}, timeout=5)
    assert same.json()["result"]["sys_mod_count"] == "1"  # no change: no update, no rule
    assert len(writes) == 1


def test_custom_priority_matrix_and_extra_fields(clock):
    matrix = {("1", "1"): "1", ("3", "3"): "4"}
    extra = {"incident": ["u_enrichment_hash"]}
    with ServiceNowSimulator(clock=clock, priority_matrix=matrix, extra_fields=extra) as sim:
        default = sim.add_record("incident")
        unmapped = sim.add_record("incident", {"impact": "2"})
        body = {"u_enrichment_hash": "abc"}
        resp = requests.patch(
            f"{sim.url}{TABLE}/{default}", json=body, auth=("admin", "admin"), timeout=5
        )
        assert resp.json()["result"]["u_enrichment_hash"] == "abc"
    assert stored(sim, default)["priority"] == "4"
    assert stored(sim, unmapped)["priority"] == ""
    with pytest.raises(ValueError, match="u_typo"):
        sim.add_record("incident", {"u_typo": "x"})


def test_invalid_choice_values_are_stored_but_flagged(sim):
    ok = sim.add_record("incident", {"category": "software", "subcategory": "os"})
    label = sim.add_record("incident", {"category": "Inquiry / Help"})
    orphan = sim.add_record("incident", {"category": "network", "subcategory": "os"})
    assert stored(sim, label)["category"] == "Inquiry / Help"
    flagged = sim.invalid_choice_values()
    assert (label, "category", "Inquiry / Help") in flagged
    assert (orphan, "subcategory", "os") in flagged
    assert [f for f in flagged if f[0] == ok] == []


def test_work_notes_go_to_the_journal(sim, http, seeded):
    sys_id = seeded["INC0010001"]
    resp = http.patch(
        f"{sim.url}{TABLE}/{sys_id}", json={"work_notes": "[auto-triage] hello"}, timeout=5
    )
    assert resp.json()["result"]["work_notes"] == ""
    assert resp.json()["result"]["sys_mod_count"] == "1"
    [entry] = sim.journal(sys_id, "work_notes")
    assert (entry["value"], entry["sys_created_by"], entry["name"]) == (
        "[auto-triage] hello", "admin", "incident",
    )  # fmt: skip
    assert sim.journal(sys_id, "comments") == []
    query = f"element_id={sys_id}^element=work_notes^valueLIKE[auto-triage]"
    rows = get(http, sim, "/api/now/table/sys_journal_field", sysparm_query=query)
    assert [r["value"] for r in rows] == ["[auto-triage] hello"]


def test_post_creates_incident_with_defaults(sim, http):
    events: list[str] = []
    sim.on_write(lambda table, rec, op, user: events.append(f"{op}:{rec['number']}:{user}"))
    body = {"short_description": "Mail down", "comments": "first"}
    resp = http.post(sim.url + TABLE, json=body, timeout=5)
    assert resp.status_code == 201
    rec = resp.json()["result"]
    assert re.fullmatch(r"[0-9a-f]{32}", rec["sys_id"])
    assert rec["number"] == "INC0010001"
    assert (rec["category"], rec["impact"], rec["urgency"], rec["priority"]) == (
        "inquiry", "3", "3", "5",
    )  # fmt: skip
    assert (rec["sys_created_by"], rec["sys_mod_count"]) == ("admin", "0")
    assert rec["sys_created_on"] == "2026-01-01 00:00:00"
    assert [e["value"] for e in sim.journal(rec["sys_id"], "comments")] == ["first"]
    assert events == ["insert:INC0010001:admin"]


def test_write_content_errors_and_delete(sim, http, seeded):
    url = f"{sim.url}{TABLE}/{seeded['INC0010001']}"
    resp = http.patch(url, data="impact=1", headers={"Content-Type": "text/plain"}, timeout=5)
    assert resp.status_code == 415
    resp = http.patch(url, data="{not json", headers=JSON, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["status"] == "failure"
    assert http.delete(url, timeout=5).status_code == 204
    assert http.delete(url, timeout=5).status_code == 404
    assert http.patch(url, json={"impact": "1"}, timeout=5).status_code == 404


def test_choice_table_is_queryable_and_replaceable(sim, http):
    query = "name=task^ORname=incident^element=category^ORelement=subcategory^language=en"
    rows = get(http, sim, "/api/now/table/sys_choice", sysparm_query=query,
               sysparm_fields="label,value,dependent_value,element")  # fmt: skip
    assert {"label": "Operating System", "value": "os", "dependent_value": "software",
            "element": "subcategory"} in rows  # fmt: skip
    assert {r["element"] for r in rows} == {"category", "subcategory"}
    sim.set_choices("incident", "category", {"network": "Netværk"})
    inc = sim.add_record("incident", {"category": "network"})
    shown = get(http, sim, f"{TABLE}/{inc}", sysparm_display_value="true")
    assert shown["category"] == "Netværk"
    rows = get(http, sim, "/api/now/table/sys_choice", sysparm_query="element=category")
    assert [r["value"] for r in rows] == ["network"]


def token(sim: ServiceNowSimulator, secret: str = CLIENT_SECRET) -> requests.Response:
    form = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": secret}
    return requests.post(sim.url + "/oauth_token.do", data=form, timeout=5)


def test_oauth_client_credentials_and_expiry(sim, clock, seeded):
    resp = token(sim)
    assert resp.status_code == 200
    body = resp.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 1799)
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    url = f"{sim.url}{TABLE}/{seeded['INC0010001']}"
    patched = requests.patch(url, json={"urgency": "1"}, headers=bearer, timeout=5)
    assert patched.json()["result"]["sys_updated_by"] == "svc_ticket_enricher"
    clock.advance(1799)
    assert requests.get(url, headers=bearer, timeout=5).status_code == 200
    clock.advance(1)
    assert requests.get(url, headers=bearer, timeout=5).status_code == 401
    fresh = {"Authorization": f"Bearer {token(sim).json()['access_token']}"}
    assert requests.get(url, headers=fresh, timeout=5).status_code == 200
    sim.expire_tokens()
    assert requests.get(url, headers=fresh, timeout=5).status_code == 401
    assert sim.request_log[0].body is None  # the token request's secret is never kept


def test_oauth_bad_client(sim):
    resp = token(sim, secret="wrong")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("retry_after", {"Retry-After": "3000", "X-RateLimit-Limit": "2",
                         "X-RateLimit-Reset": str(int(DEFAULT_EPOCH) + 3600)}),
        ("reset_only", {"X-RateLimit-Reset": str(int(DEFAULT_EPOCH) + 3600)}),
        ("none", {}),
    ],
)  # fmt: skip
def test_rate_limit_modes(sim, http, clock, mode, expected):
    sim.set_rate_limit(RateLimitRule(limit=2, mode=mode))
    clock.advance(600)
    assert [http.get(sim.url + TABLE, timeout=5).status_code for _ in range(2)] == [200, 200]
    resp = http.get(sim.url + TABLE, timeout=5)
    assert resp.status_code == 429
    assert resp.json()["status"] == "failure"
    names = ("Retry-After", "X-RateLimit-Limit", "X-RateLimit-Reset")
    assert {k: resp.headers[k] for k in names if k in resp.headers} == expected
    clock.advance(3000)  # next hourly window
    assert http.get(sim.url + TABLE, timeout=5).status_code == 200


def test_rate_limit_rule_scoped_to_method(sim, http, seeded):
    sim.set_rate_limit(RateLimitRule(limit=1, method="PATCH", table="incident"))
    url = f"{sim.url}{TABLE}/{seeded['INC0010001']}"
    assert http.patch(url, json={"impact": "2"}, timeout=5).status_code == 200
    assert http.patch(url, json={"impact": "3"}, timeout=5).status_code == 429
    assert http.get(url, timeout=5).status_code == 200
    assert stored(sim, seeded["INC0010001"])["impact"] == "2"


def test_5xx_burst_then_recovery(sim, http):
    sim.fail_next(2, status=503)
    sim.fail_next(1, status=502, html=True)
    sim.fail_next(1, status=500, message="Transaction cancelled: maximum execution time exceeded")
    statuses = [http.get(sim.url + TABLE, timeout=5) for _ in range(5)]
    assert [r.status_code for r in statuses] == [503, 503, 502, 500, 200]
    assert statuses[0].json()["status"] == "failure"
    assert statuses[2].headers["Content-Type"].startswith("text/html")
    assert "maximum execution time" in statuses[3].text
    assert [e.status for e in sim.request_log] == [503, 503, 502, 500, 200]


def test_dropped_connection_then_recovery(sim, http):
    sim.drop_next()
    with pytest.raises(requests.ConnectionError):
        http.get(sim.url + TABLE, timeout=5)
    assert http.get(sim.url + TABLE, timeout=5).status_code == 200
    assert [e.status for e in sim.request_log] == [0, 200]


def test_latency_and_read_timeout(sim, http):
    sim.latency_s = 0.1
    started = time.perf_counter()
    assert http.get(sim.url + TABLE, timeout=5).status_code == 200
    assert time.perf_counter() - started >= 0.1
    sim.latency_s = 0.3
    with pytest.raises(requests.ReadTimeout):
        http.get(sim.url + TABLE, timeout=0.05)
    sim.reset_faults()
    assert http.get(sim.url + TABLE, timeout=5).status_code == 200


def test_request_log_and_versioned_path(sim, http, seeded):
    http.get(sim.url + "/api/now/v2/table/incident", params={"sysparm_limit": "1"}, timeout=5)
    http.patch(f"{sim.url}{TABLE}/{seeded['INC0010001']}", json={"impact": "2"}, timeout=5)
    first, second = sim.request_log
    assert (first.method, first.path, first.query, first.user, first.status) == (
        "GET", "/api/now/v2/table/incident", {"sysparm_limit": "1"}, "admin", 200,
    )  # fmt: skip
    assert (second.method, second.body, second.status) == ("PATCH", {"impact": "2"}, 200)


def test_stop_joins_threads_even_with_open_keepalive_connections(clock):
    before = threading.active_count()
    sim = ServiceNowSimulator(users={"admin": "pw"}, clock=clock).start()
    url = sim.url + TABLE
    with requests.Session() as session:
        session.auth = AUTH
        assert session.get(url, timeout=5).status_code == 200  # the connection stays open
        sim.stop()
        assert threading.active_count() == before
        with pytest.raises(requests.ConnectionError):
            session.get(url, timeout=1)
    with pytest.raises(RuntimeError):
        _ = sim.url
