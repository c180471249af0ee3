"""``python -m triage dynamics register-webhook | rotate-key`` against the Dataverse simulator:
the real connector over loopback HTTPS with msal, the registration tables of
tests/simulators/dataverse_admin.py, and the step it creates really delivering new cases."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from connectors._msal import MsalTokenProvider
from connectors.dataverse_admin import DataverseAdmin
from domain.errors import SignatureError
from domain.settings import (
    DataverseSettings,
    DataverseWebhookSettings,
    HttpSettings,
    Settings,
)
from tests.simulators import FakeClock
from tests.simulators.dataverse import DataverseSimulator
from tests.simulators.dataverse_testkit import Receiver, tls_session
from triage.dataverse_inbound import WebhookKeys, check_dataverse_auth
from triage.dynamics_admin_cli import main

CLIENT = ("admin-app", "admin-app-secret-0123456789")
KEY = "dataverse-hook-key-0123456789"
NEW_KEY = "dataverse-hook-key-rotated-9876543210"
WRITES = ("POST", "PATCH", "DELETE")


@dataclass
class Env:
    sim: DataverseSimulator
    receiver: Receiver
    http: HttpSettings
    dataverse: DataverseSettings
    tokens: MsalTokenProvider
    clock: FakeClock

    @property
    def url(self) -> str:
        return f"{self.receiver.url}/api/dynamics/webhook"

    def settings(self, keys: list[str], source: str = "header") -> Settings:
        hook = DataverseWebhookSettings.model_validate({"keys": keys, "source": source})
        return Settings(dataverse=self.dataverse, http=self.http, dataverse_webhook=hook)

    def admin(self, _settings: Settings) -> DataverseAdmin:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = self.sim.ca_path
        return DataverseAdmin(
            self.dataverse,
            self.http,
            token_provider=self.tokens,
            session=session,
            sleep=self.clock.advance,
            now=self.clock.now,
            monotonic=self.clock.now,
        )

    def cli(self, *argv: str, keys: list[str] | None = None, source: str = "header") -> str:
        out = io.StringIO()
        settings = self.settings(keys or [KEY], source)
        code = main(["dynamics", *argv], settings=settings, admin_factory=self.admin, out=out)
        assert code == 0
        return out.getvalue()

    def writes(self) -> list[tuple[str, str]]:
        log = self.sim.request_log
        return [(r.method, r.path) for r in log if r.method in WRITES and "/api/data/" in r.path]

    def table(self, entity_set: str) -> list[dict[str, object]]:
        with self.sim.store.lock:
            return [dict(r) for r in self.sim.store.tables[entity_set].values()]


@pytest.fixture
def env() -> Iterator[Env]:
    clock = FakeClock(start=1_800_000_000.0)
    sim = DataverseSimulator(clients={CLIENT[0]: CLIENT[1]}, clock=clock)
    with sim, Receiver() as receiver:
        sim.tokens.resource = sim.url  # the simulated environment lives at its loopback URL
        token_session = requests.Session()
        token_session.trust_env = False
        token_session.verify = sim.ca_path
        dataverse = DataverseSettings(
            org_url=sim.url,
            tenant_id=sim.tenant,
            client_id=CLIENT[0],
            client_secret=CLIENT[1],
            authority_host=sim.url,
        )
        tokens = MsalTokenProvider(dataverse, http_client=token_session, validate_authority=False)
        http = HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
        yield Env(sim, receiver, http, dataverse, tokens, clock)
    assert sim.errors == []


def test_register_creates_the_endpoint_and_step_and_a_new_case_reaches_the_app(env: Env) -> None:
    out = env.cli("register-webhook", "--url", env.url)

    assert "created serviceendpoint 'triage-enrichment'" in out
    assert "created step 'triage-enrichment: Create of incident'" in out
    assert KEY not in out
    [endpoint] = env.table("serviceendpoints")
    assert (endpoint["contract"], endpoint["authtype"], endpoint["url"]) == (8, 5, env.url)
    [step] = env.table("sdkmessageprocessingsteps")
    assert (step["stage"], step["mode"], step["rank"], step["asyncautodelete"]) == (40, 1, 1, True)
    assert step["_eventhandler_value"] == endpoint["serviceendpointid"]
    with env.sim.store.lock:
        message = env.sim.store.tables["sdkmessages"][str(step["_sdkmessageid_value"])]
        where = env.sim.store.tables["sdkmessagefilters"][str(step["_sdkmessagefilterid_value"])]
    assert (message["name"], where["primaryobjecttypecode"]) == ("Create", "incident")

    case_id = env.sim.add_case({"title": "Kasse nede"}, fire=True)
    assert env.sim.flush()
    [delivery] = env.sim.deliveries()
    assert (delivery.case_id, delivery.step_id, delivery.status) == (
        case_id,
        step["sdkmessageprocessingstepid"],
        200,
    )
    [req] = env.receiver.received
    assert req.path == "/api/dynamics/webhook" and req.query == {}
    assert req.headers["x-triage-key"] == KEY
    # What the registration makes Dataverse send is what our webhook accepts.
    check_dataverse_auth(req.headers, req.query, WebhookKeys(keys=(KEY,)))


def test_a_second_run_changes_nothing_and_says_so(env: Env) -> None:
    env.cli("register-webhook", "--url", env.url)
    before = env.writes()

    out = env.cli("register-webhook", "--url", env.url)

    assert env.writes() == before
    assert "unchanged" in out and "nothing to change" in out
    assert len(env.table("serviceendpoints")) == 1
    assert len(env.table("sdkmessageprocessingsteps")) == 1


def test_a_moved_app_or_disabled_step_is_corrected_in_place(env: Env) -> None:
    env.cli("register-webhook", "--url", env.url)
    [step] = env.table("sdkmessageprocessingsteps")
    env.sim.store.write(
        "sdkmessageprocessingsteps",
        str(step["sdkmessageprocessingstepid"]),
        {"statecode": 1, "statuscode": 2, "mode": 0},
        "someone",
        validate=False,
    )
    moved = f"{env.receiver.url}/api/v2/dynamics/webhook"

    out = env.cli("register-webhook", "--url", moved)

    assert f"url {env.url} -> {moved}" in out
    assert "mode 0 -> 1" in out and "statecode" in out
    [endpoint] = env.table("serviceendpoints")
    [fixed] = env.table("sdkmessageprocessingsteps")
    assert endpoint["url"] == moved
    assert (fixed["statecode"], fixed["mode"]) == (0, 1)
    assert fixed["sdkmessageprocessingstepid"] == step["sdkmessageprocessingstepid"]


def test_rotate_key_makes_dataverse_send_the_new_key(env: Env) -> None:
    env.cli("register-webhook", "--url", env.url)
    writes = len(env.writes())

    out = env.cli("rotate-key", keys=[NEW_KEY, KEY])

    assert "set the key of serviceendpoint 'triage-enrichment'" in out
    assert NEW_KEY not in out and KEY not in out
    [(method, path)] = env.writes()[writes:]
    assert method == "PATCH" and "/serviceendpoints(" in path
    env.sim.add_case({"title": "Printer"}, fire=True)
    assert env.sim.flush()
    [req] = env.receiver.received
    assert req.headers["x-triage-key"] == NEW_KEY
    check_dataverse_auth(req.headers, req.query, WebhookKeys(keys=(NEW_KEY, KEY)))
    with pytest.raises(SignatureError):  # once the old key is dropped from the app
        check_dataverse_auth({"x-triage-key": KEY}, {}, WebhookKeys(keys=(NEW_KEY,)))


def test_dry_run_writes_nothing(env: Env) -> None:
    out = env.cli("register-webhook", "--url", env.url, "--dry-run")

    assert "dry run: would create serviceendpoint" in out
    assert "dry run: would create step" in out
    assert env.writes() == []
    assert env.table("serviceendpoints") == [] and env.table("sdkmessageprocessingsteps") == []

    env.cli("register-webhook", "--url", env.url)
    before = env.writes()
    out = env.cli("rotate-key", "--dry-run", keys=[NEW_KEY, KEY])
    out += env.cli("register-webhook", "--url", env.url + "-moved", "--dry-run")
    assert "would set the key" in out and "would update serviceendpoint" in out
    assert env.writes() == before


def test_webhook_key_source_registers_authtype_4_and_dataverse_adds_code(env: Env) -> None:
    env.cli("register-webhook", "--url", env.url, source="code")

    [endpoint] = env.table("serviceendpoints")
    assert endpoint["authtype"] == 4
    env.sim.add_case({"title": "VPN"}, fire=True)
    assert env.sim.flush()
    [req] = env.receiver.received
    assert req.query == {"code": KEY} and "x-triage-key" not in req.headers
    check_dataverse_auth(req.headers, req.query, WebhookKeys(keys=(KEY,), source="code"))


def test_the_simulator_never_reads_back_an_authvalue(env: Env) -> None:
    env.cli("register-webhook", "--url", env.url)
    with tls_session(env.sim) as http:
        http.headers["Authorization"] = f"Bearer {env.tokens.token()}"
        rows = http.get(f"{env.sim.api_url}/serviceendpoints", timeout=5).json()["value"]
        refused = http.get(
            f"{env.sim.api_url}/serviceendpoints", params={"$select": "authvalue"}, timeout=5
        )
        bad = http.patch(
            f"{env.sim.api_url}/serviceendpoints({rows[0]['serviceendpointid']})",
            json={"authvalue": "x-triage-key: not-xml"},
            headers={"If-Match": "*"},
            timeout=5,
        )
        sdk = http.post(f"{env.sim.api_url}/sdkmessages", json={"name": "Mine"}, timeout=5)
    assert "authvalue" not in rows[0] and rows[0]["authtype"] == 5
    assert refused.status_code == 400
    assert bad.status_code == 400  # authtype 5 wants <settings><setting .../></settings>
    assert sdk.status_code == 405  # platform-owned
