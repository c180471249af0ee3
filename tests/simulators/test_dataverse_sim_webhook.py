"""Webhooks the Dataverse simulator sends on Create of incident (dataverse.md §9), and the
standalone runner."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests

from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import CLIENT, SECRET, Receiver, api_session

ACCOUNT = "/accounts(11111111-1111-4111-8111-111111111111)"


@pytest.fixture
def sim() -> Iterator[DataverseSimulator]:
    with DataverseSimulator({CLIENT: SECRET}, FakeClock()) as s:
        yield s
    assert s.errors == []


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def http(sim: DataverseSimulator) -> Iterator[requests.Session]:
    with api_session(sim) as session:
        yield session


def create(sim: DataverseSimulator, http: requests.Session, **headers: str) -> str:
    body = {"title": "VPN", "prioritycode": 1, "customerid_account@odata.bind": ACCOUNT}
    resp = http.post(f"{sim.api_url}/incidents", json=body, headers=headers, timeout=5)
    assert resp.status_code == 204, resp.text
    return resp.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_http_create_posts_a_remote_execution_context_with_the_key(
    sim: DataverseSimulator, http: requests.Session, receiver: Receiver
) -> None:
    step = sim.register_webhook(f"{receiver.url}/api/dataverse", key="k3y")
    case = create(sim, http)
    assert sim.flush()
    [req] = receiver.received
    assert (req.method, req.path, req.query) == ("POST", "/api/dataverse", {"code": "k3y"})
    assert req.headers["x-ms-dynamics-organization"] == "contoso.crm.dynamics.com"
    assert req.headers["x-ms-dynamics-entity-name"] == "incident"
    assert req.headers["x-ms-dynamics-request-name"] == "Create"
    assert "x-ms-dynamics-msg-size-exceeded" not in req.headers
    assert b'"\\/Date(' in req.body  # slashes escaped as the platform's serializer does
    ctx = json.loads(req.body)
    assert req.headers["x-ms-correlation-request-id"] == ctx["CorrelationId"]
    assert (ctx["MessageName"], ctx["Stage"], ctx["Mode"], ctx["Depth"]) == ("Create", 40, 1, 1)
    assert ctx["PrimaryEntityId"] == case and ctx["UserId"] == sim.user_id(CLIENT)
    assert ctx["OwningExtension"]["Id"] == step
    assert ctx["OutputParameters"] == [{"key": "id", "value": case}]
    [target] = ctx["InputParameters"]
    assert target["key"] == "Target"
    attrs = {a["key"]: a["value"] for a in target["value"]["Attributes"]}
    assert attrs["title"] == "VPN"
    assert attrs["prioritycode"]["Value"] == 1
    assert attrs["prioritycode"]["__type"].startswith("OptionSetValue:")
    assert attrs["customerid"]["LogicalName"] == "account"
    assert attrs["createdon"] == "/Date(1767225600000)/"
    assert [d.status for d in sim.deliveries()] == [200]


def test_bypass_custom_async_suppresses_the_webhook(
    sim: DataverseSimulator, http: requests.Session, receiver: Receiver
) -> None:
    step = sim.register_webhook(receiver.url)
    create(sim, http, **{"MSCRM.BypassBusinessLogicExecution": "CustomAsync"})
    create(sim, http, **{"MSCRM.BypassBusinessLogicExecutionStepIds": step})
    create(sim, http, **{"MSCRM.BypassBusinessLogicExecution": "CustomSync"})
    assert sim.flush()
    assert len(receiver.received) == 1


def test_one_retry_on_503_but_none_on_500(
    sim: DataverseSimulator, http: requests.Session, receiver: Receiver
) -> None:
    sim.register_webhook(receiver.url, header=("x-functions-key", "fk"))
    receiver.statuses = [503, 503, 500]
    create(sim, http)
    create(sim, http)
    assert sim.flush()
    assert [d.attempts for d in sim.deliveries()] == [[503, 503], [500]]
    assert len(receiver.received) == 3
    assert all(r.headers["x-functions-key"] == "fk" and r.query == {} for r in receiver.received)


def test_a_timed_out_delivery_is_a_failure_without_retry(
    sim: DataverseSimulator, http: requests.Session, receiver: Receiver
) -> None:
    sim.register_webhook(receiver.url)
    sim.hooks.emitter.timeout_s = 0.2  # stands for the platform's 60 s
    receiver.latency_s = 1.0
    create(sim, http)
    assert sim.flush()
    assert [d.attempts for d in sim.deliveries()] == [[0]]  # one attempt: no retry after a timeout


def test_seeded_cases_fire_only_when_asked_and_large_bodies_are_trimmed(
    sim: DataverseSimulator, receiver: Receiver
) -> None:
    sim.register_webhook(receiver.url)
    sim.add_case({"title": "quiet"})
    big = sim.add_case({"title": "big", "description": "x" * 300_000}, fire=True)
    assert sim.flush()
    [req] = receiver.received
    assert req.headers["x-ms-dynamics-msg-size-exceeded"] == "true"
    ctx = json.loads(req.body)
    assert ctx["PrimaryEntityId"] == big
    assert not {"InputParameters", "ParentContext", "PreEntityImages", "PostEntityImages"} & set(
        ctx
    )
    assert len(req.body) < 256 * 1024


def test_webhook_body_matches_the_sample_shape(sim: DataverseSimulator) -> None:
    case = sim.add_case({"title": "x", "casetypecode": 2})
    headers, body = sim.webhook_body(case)
    ctx = json.loads(body)
    # The top-level keys of Microsoft's verbatim sample (use-webhooks.md), which the synthetic
    # Create-incident sample in ../shared/samples shares; embedded so a fresh clone needs neither.
    assert set(ctx) == CONTEXT_KEYS
    assert headers["x-ms-dynamics-entity-name"] == "incident"
    attrs = {a["key"]: a["value"] for a in ctx["InputParameters"][0]["value"]["Attributes"]}
    assert attrs["casetypecode"] == {
        "__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts",
        "Value": 2,
    }


CONTEXT_KEYS = {
    "BusinessUnitId", "CorrelationId", "Depth", "InitiatingUserId", "InputParameters",
    "IsExecutingOffline", "IsInTransaction", "IsOfflinePlayback", "IsolationMode", "MessageName",
    "Mode", "OperationCreatedOn", "OperationId", "OrganizationId", "OrganizationName",
    "OutputParameters", "OwningExtension", "ParentContext", "PostEntityImages", "PreEntityImages",
    "PrimaryEntityId", "PrimaryEntityName", "RequestId", "SecondaryEntityName", "SharedVariables",
    "Stage", "UserId",
}  # fmt: skip


def test_standalone_runner_prints_the_url_serves_seeded_cases_and_stops_on_ctrl_c() -> None:
    cmd = [sys.executable, "-m", "tests.simulators.dataverse", "--port", "0", "--seed", "3"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(4)]
            api = lines[0].split(": ", 1)[1].strip()
            authority, scope = lines[1].split()[1], lines[2].split()[1]
            ca = lines[3].rsplit(": ", 1)[1].strip()
            form = {
                "grant_type": "client_credentials",
                "client_id": "client",
                "client_secret": "secret",
                "scope": scope,
            }
            with requests.Session() as s:
                s.trust_env, s.verify = False, ca
                token = s.post(f"{authority}/oauth2/v2.0/token", data=form, timeout=5).json()[
                    "access_token"
                ]
                auth = {"Authorization": f"Bearer {token}"}
                rows = s.get(f"{api}/incidents?$select=title", headers=auth, timeout=5).json()[
                    "value"
                ]
            assert len(rows) == 3
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_servicenow_standalone_runner_serves_seeded_incidents(tls: bool) -> None:
    cmd = [sys.executable, "-m", "tests.simulators.servicenow", "--port", "0", "--seed", "2"]
    cmd.append("--tls" if tls else "--no-tls")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().split(": ", 1)[1].strip()
            proc.stdout.readline()
            assert url.startswith("https://" if tls else "http://")
            verify: bool | str = True
            if tls:
                verify = proc.stdout.readline().rsplit(": ", 1)[1].strip()
            with requests.Session() as session:
                session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
                resp = session.get(
                    f"{url}/api/now/table/incident", auth=("admin", "admin"), timeout=5,
                    verify=verify,
                )  # fmt: skip
            assert len(resp.json()["result"]) == 2
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
