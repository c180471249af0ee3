"""``dynamics register-webhook`` / ``rotate-key`` and connectors.dataverse_admin against
``responses``: the exact Web API requests, idempotency, dry runs, and the key kept secret."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses
from responses.registries import OrderedRegistry

from connectors.dataverse_admin import DataverseAdmin, header_authvalue
from domain.errors import ConfigError, RejectedError
from domain.settings import DataverseSettings, DataverseWebhookSettings, HttpSettings, Settings
from triage import cli
from triage.dynamics_admin_cli import main, register_webhook, rotate_key, spec_from_settings

ORG = "https://acme.crm.dynamics.com"
API = f"{ORG}/api/data/v9.2"
APP_URL = "https://enrich-prod.azurewebsites.net/api/dynamics/webhook"
KEY = "k3y-0123456789-abcdef"
ENDPOINT = "11111111-1111-4111-8111-111111111111"
MESSAGE = "22222222-2222-4222-8222-222222222222"
FILTER = "33333333-3333-4333-8333-333333333333"
STEP = "44444444-4444-4444-8444-444444444444"
AUTHVALUE = f'<settings><setting name="x-triage-key" value="{KEY}" /></settings>'


class Tokens:
    def token(self) -> str:
        return "tok"

    def invalidate(self) -> None:
        pass


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """Each answer served once, in order; an unexpected or unused request fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=True, registry=OrderedRegistry) as m:
        yield m


def dataverse() -> DataverseSettings:
    return DataverseSettings(org_url=ORG, tenant_id="t", client_id="c", client_secret="s")


def settings(keys: list[str] | None = None, **hook: object) -> Settings:
    webhook = DataverseWebhookSettings.model_validate({"keys": keys or [KEY], **hook})
    return Settings(dataverse=dataverse(), dataverse_webhook=webhook)


def admin() -> DataverseAdmin:
    http = HttpSettings(max_attempts=1, backoff_initial_s=0.01, backoff_max_s=0.01)
    return DataverseAdmin(dataverse(), http, token_provider=Tokens(), sleep=lambda _: None)


def query(call: responses.Call) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(call.request.url or "").query))


def collection(url: str, rows: list[dict[str, object]]) -> dict[str, object]:
    return {"@odata.context": f"{url}/$metadata", "value": rows}


def lookups(rsps: responses.RequestsMock) -> None:
    rsps.get(
        f"{API}/sdkmessages", json=collection(API, [{"sdkmessageid": MESSAGE, "name": "Create"}])
    )
    rsps.get(
        f"{API}/sdkmessagefilters",
        json=collection(API, [{"sdkmessagefilterid": FILTER, "primaryobjecttypecode": "incident"}]),
    )


def endpoint_row(**extra: object) -> dict[str, object]:
    row = {
        "serviceendpointid": ENDPOINT,
        "name": "triage-enrichment",
        "url": APP_URL,
        "contract": 8,
        "authtype": 5,
    }
    return {**row, **extra}


def step_row(**extra: object) -> dict[str, object]:
    row = {
        "sdkmessageprocessingstepid": STEP, "name": "triage-enrichment: Create of incident",
        "stage": 40, "mode": 1, "rank": 1, "asyncautodelete": True, "statecode": 0,
        "_sdkmessageid_value": MESSAGE, "_sdkmessagefilterid_value": FILTER,
        "_eventhandler_value": ENDPOINT,
    }  # fmt: skip
    return {**row, **extra}


def created(entity_set: str, guid: str) -> dict[str, str]:
    return {"OData-EntityId": f"{API}/{entity_set}({guid})"}


def test_register_on_a_fresh_environment_sends_exactly_these_requests(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, []))
    rsps.post(f"{API}/serviceendpoints", status=204, headers=created("serviceendpoints", ENDPOINT))
    lookups(rsps)
    rsps.get(f"{API}/sdkmessageprocessingsteps", json=collection(API, []))
    rsps.post(
        f"{API}/sdkmessageprocessingsteps",
        status=204,
        headers=created("sdkmessageprocessingsteps", STEP),
    )

    outcome = register_webhook(admin(), spec_from_settings(settings()), APP_URL, dry_run=False)

    find, create, message, where, steps, step = rsps.calls
    assert query(find) == {
        "$select": "serviceendpointid,name,url,contract,authtype",
        "$filter": "contract eq 8 and name eq 'triage-enrichment'",
    }
    assert find.request.headers["Authorization"] == "Bearer tok"
    assert json.loads(create.request.body or b"") == {
        "name": "triage-enrichment", "url": APP_URL, "contract": 8, "authtype": 5,
        "authvalue": AUTHVALUE, "messageformat": 2, "userclaim": 1,
    }  # fmt: skip
    assert query(message) == {"$select": "sdkmessageid,name", "$filter": "name eq 'Create'"}
    assert query(where)["$filter"] == (
        f"_sdkmessageid_value eq {MESSAGE} and primaryobjecttypecode eq 'incident'"
    )
    assert query(steps)["$filter"] == f"_eventhandler_value eq {ENDPOINT}"
    assert json.loads(step.request.body or b"") == {
        "name": "triage-enrichment: Create of incident", "stage": 40, "mode": 1, "rank": 1,
        "asyncautodelete": True, "supporteddeployment": 0,
        "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({ENDPOINT})",
        "sdkmessageid@odata.bind": f"/sdkmessages({MESSAGE})",
        "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({FILTER})",
    }  # fmt: skip
    assert (outcome.changed, outcome.endpoint_id, outcome.step_id) == (True, ENDPOINT, STEP)
    assert not any(KEY in line for line in outcome.lines)


def test_register_when_all_is_in_place_only_reads_and_says_so(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, [endpoint_row()]))
    lookups(rsps)
    rsps.get(f"{API}/sdkmessageprocessingsteps", json=collection(API, [step_row()]))

    outcome = register_webhook(admin(), spec_from_settings(settings()), APP_URL, dry_run=False)

    assert [c.request.method for c in rsps.calls] == ["GET"] * 4
    assert outcome.changed is False
    assert outcome.lines[-1] == "nothing to change: the webhook is registered as wanted"


def test_a_step_that_drifted_is_patched_with_only_the_differences(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, [endpoint_row(authtype=4)]))
    rsps.patch(f"{API}/serviceendpoints({ENDPOINT})", status=204)
    lookups(rsps)
    rsps.get(
        f"{API}/sdkmessageprocessingsteps",
        json=collection(API, [step_row(asyncautodelete=False, statecode=1)]),
    )
    rsps.patch(f"{API}/sdkmessageprocessingsteps({STEP})", status=204)

    outcome = register_webhook(admin(), spec_from_settings(settings()), APP_URL, dry_run=False)

    endpoint_patch, step_patch = rsps.calls[1], rsps.calls[5]
    assert endpoint_patch.request.headers["If-Match"] == "*"  # never creates a row
    assert json.loads(endpoint_patch.request.body or b"") == {"authtype": 5, "authvalue": AUTHVALUE}
    assert json.loads(step_patch.request.body or b"") == {
        "asyncautodelete": True, "statecode": 0, "statuscode": 1,
    }  # fmt: skip
    assert outcome.changed and not any(KEY in line for line in outcome.lines)


def test_dry_run_reads_but_never_writes(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, []))
    lookups(rsps)  # the message and filter must exist even for a dry run

    outcome = register_webhook(admin(), spec_from_settings(settings()), APP_URL, dry_run=True)

    assert [c.request.method for c in rsps.calls] == ["GET"] * 3
    assert outcome.lines[0].startswith("would create serviceendpoint 'triage-enrichment'")
    assert outcome.lines[1].startswith("would create step")


def test_rotate_key_patches_only_the_authvalue(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, [endpoint_row()]))
    rsps.patch(f"{API}/serviceendpoints({ENDPOINT})", status=204)
    new = "n3w-key-0123456789-xyz"

    outcome = rotate_key(admin(), spec_from_settings(settings([new, KEY])), dry_run=False)

    patch = rsps.calls[1]
    assert json.loads(patch.request.body or b"") == {
        "authvalue": f'<settings><setting name="x-triage-key" value="{new}" /></settings>'
    }
    assert "first of the 2 key(s)" in outcome.lines[0]
    assert not any(new in line or KEY in line for line in outcome.lines)


def test_rotate_key_without_a_registration_is_a_config_error(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, []))
    with pytest.raises(ConfigError, match="run register-webhook first"):
        rotate_key(admin(), spec_from_settings(settings()), dry_run=False)


def test_two_endpoints_with_our_name_are_refused_not_guessed(rsps) -> None:
    rows = [endpoint_row(), endpoint_row(serviceendpointid=STEP)]
    rsps.get(f"{API}/serviceendpoints", json=collection(API, rows))
    with pytest.raises(RejectedError, match="2 webhook service endpoints"):
        register_webhook(admin(), spec_from_settings(settings()), APP_URL, dry_run=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://enrich-prod.azurewebsites.net/api/dynamics/webhook",  # plain http off loopback
        f"{APP_URL}?code={KEY}",  # the key would sit in the URL and shell history
        "https://user:pw@enrich-prod.azurewebsites.net/api/dynamics/webhook",
    ],
)
def test_bad_urls_are_refused_before_any_request(rsps, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        register_webhook(admin(), spec_from_settings(settings()), url, dry_run=False)
    assert KEY not in str(info.value)
    assert len(rsps.calls) == 0


def test_header_authvalue_escapes_the_key_and_round_trips() -> None:
    key = "a\"b<c>&d'e-0123456789"
    root = ET.fromstring(header_authvalue("x-triage-key", key))  # noqa: S314 - our own output
    [setting] = list(root)
    assert (root.tag, setting.tag) == ("settings", "setting")
    assert (setting.get("name"), setting.get("value")) == ("x-triage-key", key)
    with pytest.raises(RejectedError):
        header_authvalue("bad header", key)


def test_spec_from_settings_follows_source_header_and_key_order() -> None:
    spec = spec_from_settings(settings(["first-key-0123456789", "old-key-0123456789"]))
    assert (spec.authtype, spec.header, spec.key, spec.keys_configured) == (
        5, "x-triage-key", "first-key-0123456789", 2,
    )  # fmt: skip
    assert spec_from_settings(settings(source="code")).authtype == 4
    assert spec_from_settings(settings(), header="x-other").header == "x-other"
    assert "first-key" not in repr(spec)
    with pytest.raises(ConfigError, match="ENRICH_DATAVERSE_WEBHOOK__KEYS"):
        spec_from_settings(Settings(dataverse=dataverse()))
    with pytest.raises(ConfigError):  # too short to be a key
        spec_from_settings(settings(["short"]))


def test_main_prints_the_plan_prefixed_for_a_dry_run(rsps) -> None:
    rsps.get(f"{API}/serviceendpoints", json=collection(API, [endpoint_row()]))
    lookups(rsps)
    rsps.get(f"{API}/sdkmessageprocessingsteps", json=collection(API, [step_row()]))
    out = io.StringIO()

    code = main(
        ["dynamics", "register-webhook", "--url", APP_URL, "--dry-run"],
        settings=settings(),
        admin_factory=lambda _s: admin(),
        out=out,
    )

    assert code == 0
    assert out.getvalue().splitlines()[-1] == (
        "dry run: nothing to change: the webhook is registered as wanted"
    )


def test_the_triage_cli_routes_dynamics_and_reports_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENRICH_DATAVERSE__ORG_URL", ORG)
    monkeypatch.setenv("ENRICH_DATAVERSE__TENANT_ID", "t")
    monkeypatch.setenv("ENRICH_DATAVERSE__CLIENT_ID", "c")
    monkeypatch.setenv("ENRICH_DATAVERSE__CLIENT_SECRET", "s")
    monkeypatch.setenv("ENRICH_DATAVERSE_WEBHOOK__KEYS", json.dumps([KEY]))

    code = cli.main(["dynamics", "register-webhook", "--url", f"{APP_URL}?code=x"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --url must not carry ?code=") and KEY not in err
