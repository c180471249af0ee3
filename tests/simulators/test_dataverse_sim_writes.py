"""Writes on the Dataverse simulator (dataverse.md §2-3): etags, upsert, binds, validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.simulators import FakeClock
from tests.simulators.dataverse import PERSON, DataverseSimulator
from tests.simulators.dataverse_testkit import CLIENT, SECRET, api_session


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DataverseSimulator]:
    with DataverseSimulator({CLIENT: SECRET}, clock) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def http(sim: DataverseSimulator) -> Iterator[requests.Session]:
    with api_session(sim) as session:
        yield session


def case_url(sim: DataverseSimulator, case_id: str) -> str:
    return f"{sim.api_url}/incidents({case_id})"


def err(resp: requests.Response) -> dict[str, Any]:
    body = resp.json()["error"]
    assert set(body) == {"code", "message"}
    return dict(body)


def test_patch_with_matching_etag_bumps_it_and_stamps_the_caller(
    sim: DataverseSimulator, http: requests.Session, clock: FakeClock
) -> None:
    case = sim.add_case({"title": "x"})
    etag = http.get(case_url(sim, case), timeout=5).json()["@odata.etag"]
    clock.advance(60)
    resp = http.patch(
        case_url(sim, case), json={"prioritycode": 1}, headers={"If-Match": etag}, timeout=5
    )
    assert resp.status_code == 204, resp.text
    assert resp.headers["OData-EntityId"] == case_url(sim, case)
    stored = sim.get_case(case)
    assert stored is not None
    assert stored["prioritycode"] == 1
    assert stored["_modifiedby_value"] == sim.user_id(CLIENT)
    assert stored["modifiedon"] == "2026-01-01T00:01:00Z"
    assert f'W/"{stored["versionnumber"]}"' != etag
    again = http.patch(
        case_url(sim, case), json={"prioritycode": 2}, headers={"If-Match": etag}, timeout=5
    )
    assert again.status_code == 412
    assert (
        err(again)["message"]
        == "The version of the existing record doesn't match the RowVersion property provided."
    )


def test_if_match_star_on_missing_is_404_but_plain_patch_upserts(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    new_id = "0f0f0f0f-0000-4000-8000-00000000abcd"
    body = {
        "title": "made by upsert",
        "customerid_account@odata.bind": "/accounts(11111111-1111-4111-8111-111111111111)",
    }
    star = http.patch(case_url(sim, new_id), json=body, headers={"If-Match": "*"}, timeout=5)
    assert star.status_code == 404
    assert sim.get_case(new_id) is None
    upsert = http.patch(case_url(sim, new_id), json=body, timeout=5)
    assert upsert.status_code == 204
    stored = sim.get_case(new_id)
    assert stored is not None and stored["title"] == "made by upsert"
    assert stored["ticketnumber"].startswith("CAS-")


def test_return_representation_and_bind(sim: DataverseSimulator, http: requests.Session) -> None:
    subject = sim.add_subject("Software")
    case = sim.add_case({"title": "x"})
    resp = http.patch(
        case_url(sim, case) + "?$select=_subjectid_value,prioritycode",
        json={"subjectid@odata.bind": f"/subjects({subject})", "prioritycode": 3},
        headers={"Prefer": "return=representation", "If-Match": "*"},
        timeout=5,
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["_subjectid_value"] == subject and body["prioritycode"] == 3
    assert set(body) == {
        "@odata.context",
        "@odata.etag",
        "_subjectid_value",
        "prioritycode",
        "incidentid",
    }
    ghost = http.patch(
        case_url(sim, case),
        json={"subjectid@odata.bind": "/subjects(00000000-0000-4000-8000-0000000000ff)"},
        timeout=5,
    )
    assert ghost.status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prioritycode": 7}, "outside the valid range"),
        ({"prioritycode": "1"}, "Edm.Int32"),
        ({"new_impact": 4}, "outside the valid range"),
        ({"title": "x" * 201}, "maximum allowed length of '200'"),
        ({"nosuch": 1}, "does not exist on type"),
        ({"_subjectid_value": "00000000-0000-4000-8000-000000000001"}, "does not exist on type"),
        ({"ticketnumber": "CAS-1"}, "read-only"),
        ({"statecode": 1, "statuscode": 5}, "CloseIncidentRequest"),
        ({"statecode": 0, "statuscode": 5}, "not a valid status code"),
    ],
)
def test_invalid_writes_are_refused_and_change_nothing(
    sim: DataverseSimulator, http: requests.Session, body: dict[str, Any], needle: str
) -> None:
    sim.set_choices("new_impact", {1: "High", 2: "Medium", 3: "Low"})
    case = sim.add_case({"title": "x"})
    before = sim.get_case(case)
    resp = http.patch(case_url(sim, case), json=body, timeout=5)
    assert resp.status_code == 400
    assert needle in err(resp)["message"]
    assert sim.get_case(case) == before


def test_closed_cases_are_read_only_until_reactivated(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    resolved = sim.add_case({"title": "x", "statecode": 1, "statuscode": 5})
    refused = http.patch(case_url(sim, resolved), json={"prioritycode": 1}, timeout=5)
    assert refused.status_code == 400
    assert "already been resolved" in err(refused)["message"]
    cancelled = sim.add_case({"title": "x", "statecode": 2, "statuscode": 6})
    assert (
        "cancelled"
        in err(http.patch(case_url(sim, cancelled), json={"title": "y"}, timeout=5))["message"]
    )
    reopen = http.patch(case_url(sim, resolved), json={"statecode": 0, "statuscode": 1}, timeout=5)
    assert reopen.status_code == 204
    assert (
        http.patch(case_url(sim, resolved), json={"prioritycode": 1}, timeout=5).status_code == 204
    )


def test_post_creates_a_case_with_defaults_and_requires_a_customer(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    no_customer = http.post(f"{sim.api_url}/incidents", json={"title": "x"}, timeout=5)
    assert no_customer.status_code == 400
    body = {
        "title": "Laptop",
        "customerid_contact@odata.bind": "/contacts(22222222-2222-4222-8222-222222222222)",
    }
    resp = http.post(f"{sim.api_url}/incidents", json=body, timeout=5)
    assert resp.status_code == 204
    case_id = resp.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    stored = sim.get_case(case_id)
    assert stored is not None
    assert (stored["prioritycode"], stored["statecode"], stored["statuscode"]) == (2, 0, 1)
    assert stored["_customerid_value"] == "22222222-2222-4222-8222-222222222222"
    assert stored["_createdby_value"] == stored["_ownerid_value"] == sim.user_id(CLIENT)
    wrong = {
        "title": "x",
        "customerid_account@odata.bind": "/contacts(22222222-2222-4222-8222-222222222222)",
    }
    assert http.post(f"{sim.api_url}/incidents", json=wrong, timeout=5).status_code == 400


def test_update_record_acts_as_a_person(sim: DataverseSimulator) -> None:
    case = sim.add_case({"title": "x"})
    version = sim.get_case(case)["versionnumber"]  # type: ignore[index]
    rec = sim.update_record(case, {"title": "edited"})
    assert rec["_modifiedby_value"] == PERSON
    assert rec["versionnumber"] > version
    with pytest.raises(ValueError, match="unknown"):
        sim.update_record(case, {"nosuch": 1})
    with pytest.raises(KeyError):
        sim.update_record("00000000-0000-4000-8000-000000000000", {"title": "x"})
