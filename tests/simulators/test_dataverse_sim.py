"""The Dataverse simulator answers like the Web API (dataverse.md §1-4): auth, reads, writes."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import msal  # type: ignore[import-untyped]
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import CLIENT, SECRET, api_session, tls_session

FORMATTED = 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"'


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[DataverseSimulator]:
    with DataverseSimulator({CLIENT: SECRET, "other": "pw2"}, clock) as s:
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


# ---- TLS and the token endpoint -------------------------------------------------------------


def test_serves_https_with_a_certificate_only_the_ca_path_trusts(sim: DataverseSimulator) -> None:
    assert sim.url.startswith("https://127.0.0.1:")
    with requests.Session() as plain:
        plain.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            plain.get(f"{sim.api_url}/WhoAmI", timeout=5)
    with tls_session(sim) as trusted:
        assert trusted.get(f"{sim.api_url}/WhoAmI", timeout=5).status_code == 401


def test_msal_gets_a_token_and_whoami_names_the_application_user(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    me = http.get(f"{sim.api_url}/WhoAmI", timeout=5)
    assert me.status_code == 200
    assert me.headers["OData-Version"] == "4.0"
    assert me.headers["x-ms-service-request-id"]
    body = me.json()
    assert body["UserId"] == sim.user_id(CLIENT) != sim.user_id("other")
    assert body["BusinessUnitId"] == sim.business_unit_id
    assert body["OrganizationId"] == sim.organization_id


def test_msal_reports_a_wrong_secret_and_a_foreign_scope(sim: DataverseSimulator) -> None:
    session = tls_session(sim)
    bad = msal.ConfidentialClientApplication(
        CLIENT, authority=sim.authority, client_credential="nope", http_client=session,
        instance_discovery=False,
    )  # fmt: skip
    result = bad.acquire_token_for_client([sim.scope])
    assert result["error"] == "invalid_client"
    assert "AADSTS7000215" in result["error_description"]
    good = msal.ConfidentialClientApplication(
        CLIENT, authority=sim.authority, client_credential=SECRET, http_client=session,
        instance_discovery=False,
    )  # fmt: skip
    other = good.acquire_token_for_client(["https://fabrikam.crm.dynamics.com/.default"])
    assert "AADSTS500011" in other["error_description"]
    assert sim.tokens.issued == 0


def test_tokens_expire_after_the_ttl_and_on_expire_tokens(
    sim: DataverseSimulator, clock: FakeClock, http: requests.Session
) -> None:
    assert http.get(f"{sim.api_url}/WhoAmI", timeout=5).status_code == 200
    clock.advance(3600)
    expired = http.get(f"{sim.api_url}/WhoAmI", timeout=5)
    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    with api_session(sim) as fresh:
        assert fresh.get(f"{sim.api_url}/WhoAmI", timeout=5).status_code == 200
        sim.expire_tokens()
        assert fresh.get(f"{sim.api_url}/WhoAmI", timeout=5).status_code == 401


def test_token_endpoint_refuses_other_grants_and_keeps_no_secret_in_the_log(
    sim: DataverseSimulator,
) -> None:
    with tls_session(sim) as session:
        url = f"{sim.authority}/oauth2/v2.0/token"
        form = {"grant_type": "password", "client_id": CLIENT, "client_secret": SECRET}
        resp = session.post(url, data=form, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_grant_type"
    assert all(entry.body is None for entry in sim.request_log)


# ---- reads ----------------------------------------------------------------------------------


def test_get_case_selects_columns_with_etag_ints_and_lookup_values(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    subject = sim.add_subject("Network")
    case = sim.add_case({"title": "VPN", "prioritycode": 1, "_subjectid_value": subject})
    resp = http.get(
        case_url(sim, case), params={"$select": "title,prioritycode,_subjectid_value"}, timeout=5
    )
    body = resp.json()
    assert body["@odata.context"].endswith(
        "$metadata#incidents(title,prioritycode,_subjectid_value)/$entity"
    )
    assert body["@odata.etag"] == f'W/"{sim.get_case(case)["versionnumber"]}"'  # type: ignore[index]
    assert body["prioritycode"] == 1
    assert body["_subjectid_value"] == subject
    assert body["incidentid"] == case  # the primary key is always returned
    assert "description" not in body
    assert not any("@OData.Community" in k for k in body)


def test_formatted_values_only_when_preferred(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    subject = sim.add_subject("Hardware")
    case = sim.add_case({"title": "x", "prioritycode": 3, "_subjectid_value": subject})
    resp = http.get(case_url(sim, case), headers={"Prefer": FORMATTED}, timeout=5)
    body = resp.json()
    assert body["prioritycode@OData.Community.Display.V1.FormattedValue"] == "Low"
    assert body["_subjectid_value@OData.Community.Display.V1.FormattedValue"] == "Hardware"
    assert body["statecode@OData.Community.Display.V1.FormattedValue"] == "Active"
    assert "_subjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname" not in body
    assert "OData.Community.Display.V1.FormattedValue" in resp.headers["Preference-Applied"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"$select": "title,nosuchcolumn"}, "Could not find a property named 'nosuchcolumn'"),
        ({"$select": "subjectid"}, "Could not find a property named 'subjectid'"),
        ({"$expand": "subjectid"}, "$expand"),
        ({"$filter": "title eq 'x'"}, "$filter"),
    ],
)
def test_single_get_refuses_what_it_does_not_implement(
    sim: DataverseSimulator, http: requests.Session, params: dict[str, str], needle: str
) -> None:
    case = sim.add_case({"title": "x"})
    resp = http.get(case_url(sim, case), params=params, timeout=5)
    assert resp.status_code == 400
    assert err(resp)["code"] == "0x80060888"
    assert needle in err(resp)["message"]


def test_missing_case_is_404_and_unchanged_case_is_304(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    missing = http.get(case_url(sim, "00000000-0000-4000-8000-000000000009"), timeout=5)
    assert missing.status_code == 404
    assert "Does Not Exist" in err(missing)["message"]
    case = sim.add_case({"title": "x"})
    etag = http.get(case_url(sim, case), timeout=5).headers["ETag"]
    assert (
        http.get(case_url(sim, case), headers={"If-None-Match": etag}, timeout=5).status_code == 304
    )
    sim.update_record(case, {"title": "y"})
    assert (
        http.get(case_url(sim, case), headers={"If-None-Match": etag}, timeout=5).status_code == 200
    )


def test_paging_follows_an_opaque_next_link_and_refuses_a_changed_one(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    ids = {sim.add_case({"title": f"case {i:02d}"}) for i in range(7)}
    prefer = {"Prefer": "odata.maxpagesize=3"}
    url: str | None = f"{sim.api_url}/incidents?$select=title&$orderby=title asc"
    seen: list[str] = []
    links: list[str] = []
    while url:
        resp = http.get(url, headers=prefer, timeout=5)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=3"
        body = resp.json()
        assert len(body["value"]) <= 3
        seen += [row["title"] for row in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert "$skiptoken=" in url
            links.append(url)
    assert seen == [f"case {i:02d}" for i in range(7)]
    assert len(links) == 2 and len(ids) == 7
    tampered = http.get(links[0].replace("title%20asc", "title%20desc"), headers=prefer, timeout=5)
    assert tampered.status_code == 400


def test_skip_is_refused_and_top_limits_without_paging(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    for i in range(4):
        sim.add_case({"title": f"t{i}"})
    skip = http.get(f"{sim.api_url}/incidents", params={"$skip": "1"}, timeout=5)
    assert skip.status_code == 400
    assert "$skip" in err(skip)["message"]
    top = http.get(f"{sim.api_url}/incidents", params={"$top": "2", "$select": "title"}, timeout=5)
    assert len(top.json()["value"]) == 2
    assert "@odata.nextLink" not in top.json()


def test_filter_and_orderby_over_http(sim: DataverseSimulator, http: requests.Session) -> None:
    a = sim.add_case(
        {"title": "Printer jam", "prioritycode": 1, "createdon": "2026-01-02T00:00:00Z"}
    )
    b = sim.add_case(
        {"title": "printer offline", "prioritycode": 3, "createdon": "2026-01-03T00:00:00Z"}
    )
    sim.add_case({"title": "VPN", "prioritycode": 1, "createdon": "2026-01-04T00:00:00Z"})
    params = {
        "$filter": "contains(title,'PRINTER') and (prioritycode eq 1 or createdon ge 2026-01-03T00:00:00Z)",
        "$orderby": "prioritycode desc,createdon asc",
        "$select": "title",
    }
    resp = http.get(f"{sim.api_url}/incidents", params=params, timeout=5)
    assert resp.status_code == 200, resp.text
    assert [r["incidentid"] for r in resp.json()["value"]] == [b, a]
    unknown = http.get(f"{sim.api_url}/incidents", params={"$filter": "nosuch eq 1"}, timeout=5)
    assert "Could not find a property named 'nosuch'" in err(unknown)["message"]
    unsupported = http.get(
        f"{sim.api_url}/incidents", params={"$filter": "not (prioritycode eq 1)"}, timeout=5
    )
    assert unsupported.status_code == 400


def test_annotations_emails_and_subjects_queries(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    root = sim.add_subject("Network")
    child = sim.add_subject("VPN", parent=root)
    case = sim.add_case({"title": "x"})
    sim.add_email(case, "<p>second</p>", "Re: VPN", "2026-01-02T00:00:00Z")
    sim.add_email(case, "<p>first</p>", "VPN", "2026-01-01T00:00:00Z")
    sim.add_email(sim.add_case({"title": "other"}), "<p>not ours</p>", "x")
    emails = http.get(
        f"{sim.api_url}/emails",
        params={
            "$filter": f"_regardingobjectid_value eq {case}",
            "$orderby": "createdon asc",
            "$select": "description,subject",
        },
        timeout=5,
    ).json()["value"]
    assert [e["description"] for e in emails] == ["<p>first</p>", "<p>second</p>"]
    subjects = http.get(
        f"{sim.api_url}/subjects",
        params={"$select": "subjectid,title,_parentsubject_value", "$orderby": "title asc"},
        timeout=5,
    ).json()["value"]
    assert [(s["title"], s["_parentsubject_value"]) for s in subjects] == [
        ("Network", None), ("VPN", root),
    ]  # fmt: skip
    assert subjects[1]["subjectid"] == child
    note = {
        "subject": "AI triage",
        "notetext": "[triage] category=network",
        "objectid_incident@odata.bind": f"/incidents({case})",
    }
    created = http.post(f"{sim.api_url}/annotations", json=note, timeout=5)
    assert created.status_code == 204
    assert "/annotations(" in created.headers["OData-EntityId"]
    found = http.get(
        f"{sim.api_url}/annotations",
        params={"$filter": f"_objectid_value eq {case} and contains(notetext,'[triage]')"},
        timeout=5,
    ).json()["value"]
    assert len(found) == 1 and found[0]["objecttypecode"] == "incident"
    assert sim.annotations(case)[0]["_createdby_value"] == sim.user_id(CLIENT)


def test_option_set_metadata_includes_custom_choice_columns(
    sim: DataverseSimulator, http: requests.Session
) -> None:
    sim.set_choices("new_impact", {1: "High", 2: "Medium", 3: "Low"})
    base = f"{sim.api_url}/EntityDefinitions(LogicalName='incident')/Attributes"
    params = {"$select": "LogicalName", "$expand": "OptionSet($select=Options)"}
    resp = http.get(
        f"{base}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata", params=params, timeout=5
    )
    assert resp.status_code == 200, resp.text
    by_name = {
        a["LogicalName"]: {
            o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in a["OptionSet"]["Options"]
        }
        for a in resp.json()["value"]
    }
    assert by_name["prioritycode"] == {1: "High", 2: "Normal", 3: "Low"}
    assert by_name["casetypecode"] == {1: "Question", 2: "Problem", 3: "Request"}
    assert by_name["new_impact"] == {1: "High", 2: "Medium", 3: "Low"}
    assert "statuscode" not in by_name  # served under StatusAttributeMetadata, as the platform does
    status = http.get(
        f"{base}/Microsoft.Dynamics.CRM.StatusAttributeMetadata", params=params, timeout=5
    )
    options = status.json()["value"][0]["OptionSet"]["Options"]
    assert {o["Value"]: o["State"] for o in options}[5] == 1
    bad = http.get(
        f"{base}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "SchemaName"},
        timeout=5,
    )
    assert bad.status_code == 400


def _certificate() -> tuple[str, str, str]:
    """(private key PEM, certificate PEM, SHA-1 thumbprint hex) of a throw-away RSA cert."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return key_pem, cert_pem, cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303


def test_msal_certificate_credentials_are_verified() -> None:
    key_pem, cert_pem, thumb = _certificate()
    other_key, _, _ = _certificate()
    with DataverseSimulator({"cert-app": cert_pem}, FakeClock()) as sim, tls_session(sim) as s:
        results = [
            msal.ConfidentialClientApplication(
                "cert-app", authority=sim.authority, http_client=s, instance_discovery=False,
                client_credential={"private_key": pem, "thumbprint": thumb},
            ).acquire_token_for_client([sim.scope])
            for pem in (key_pem, other_key)
        ]  # fmt: skip
    assert "access_token" in results[0], results[0]
    assert results[1]["error"] == "invalid_client"
    assert "AADSTS700027" in results[1]["error_description"]
