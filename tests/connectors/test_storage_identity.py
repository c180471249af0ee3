"""Identity-based Storage connections (connectors/storage_auth.py) and every client built on them.

The setting shapes follow the Functions host's rules for ``AzureWebJobsStorage__*``; the
credential is recorded by a factory passed in (no network), and the Storage calls of the replay
guard, claims, shadow records, backfill checkpoints, budget rows and the job queue go to
``responses`` to show they carry the identity's bearer token and no key.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import responses
from azure.core.credentials import AccessToken

from connectors.backfill_budget_rows import TableBudgetRows
from connectors.backfill_stores import TableCheckpointStore
from connectors.queue import StorageJobQueue
from connectors.shadow import TableShadowStore
from connectors.storage_auth import (
    DEV_STORAGE_CONNECTION_STRING,
    CredentialSpec,
    default_credential_factory,
    resolve_connection,
    resolve_connection_string,
)
from connectors.table_state import LazyTable, TableClaimStore, TableReplayGuard
from domain.errors import ConfigError

H = "AzureWebJobsStorage"
CLIENT_ID = "99999999-8888-7777-6666-555555555555"
TABLES = "https://stacct.table.core.windows.net"
QUEUES = "https://stacct.queue.core.windows.net"
# What infra/modules/function-app.bicep sets.
BICEP = {
    f"{H}__accountName": "stacct",
    f"{H}__credential": "managedidentity",
    f"{H}__clientId": CLIENT_ID,
    f"{H}__blobServiceUri": "https://stacct.blob.core.windows.net/",
    f"{H}__queueServiceUri": f"{QUEUES}/",
    f"{H}__tableServiceUri": f"{TABLES}/",
}


class FakeCredential:
    """A token credential that counts its calls; never talks to an identity endpoint."""

    def __init__(self) -> None:
        self.token = "mi-token-1"
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, 4_102_444_800)


class Recorder:
    """A credential factory recording the specs it is asked for."""

    def __init__(self) -> None:
        self.specs: list[CredentialSpec] = []
        self.credential = FakeCredential()

    def __call__(self, spec: CredentialSpec) -> FakeCredential:
        self.specs.append(spec)
        return self.credential


# ---- setting shapes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "endpoints", "spec"),
    [
        pytest.param(
            BICEP,
            {"queue": QUEUES, "table": TABLES, "blob": "https://stacct.blob.core.windows.net"},
            CredentialSpec("managed_identity", client_id=CLIENT_ID),
            id="bicep: service URIs win over accountName, user-assigned identity",
        ),
        pytest.param(
            {f"{H}__accountName": "stacct", f"{H}__credential": "ManagedIdentity"},
            {"queue": QUEUES, "table": TABLES, "blob": "https://stacct.blob.core.windows.net"},
            CredentialSpec("managed_identity"),
            id="accountName: global Azure endpoints, system-assigned identity",
        ),
        pytest.param(
            {
                f"{H}__queueServiceUri": "https://q.example.net",
                f"{H}__tableServiceUri": "https://t.example.net",
                f"{H}__credential": "managedidentity",
                f"{H}__managedIdentityResourceId": "/subscriptions/s/rg/id-1",
            },
            {"queue": "https://q.example.net", "table": "https://t.example.net"},
            CredentialSpec("managed_identity", resource_id="/subscriptions/s/rg/id-1"),
            id="custom DNS URIs, identity by resource id",
        ),
        pytest.param(
            {f"{H}__accountName": "stacct"},
            {"queue": QUEUES, "table": TABLES, "blob": "https://stacct.blob.core.windows.net"},
            CredentialSpec("default"),
            id="no credential: local development (DefaultAzureCredential)",
        ),
        pytest.param(
            {f"{H}__serviceUri": "https://stacct.blob.core.windows.net"},
            {"blob": "https://stacct.blob.core.windows.net"},
            CredentialSpec("default"),
            id="host serviceUri is the blob service only",
        ),
        pytest.param(
            {
                f"{H}__accountName": "stacct",
                f"{H}__tenantId": "contoso.onmicrosoft.com",
                f"{H}__clientId": "app-1",
                f"{H}__clientSecret": "sp-secret-value",
            },
            {"queue": QUEUES, "table": TABLES, "blob": "https://stacct.blob.core.windows.net"},
            CredentialSpec(
                "client_secret",
                client_id="app-1",
                tenant_id="contoso.onmicrosoft.com",
                client_secret="sp-secret-value",
            ),
            id="local service principal",
        ),
    ],
)
def test_each_setting_shape_gives_its_endpoints_and_credential(env, endpoints, spec):
    connection = resolve_connection(env, H)
    assert connection.identity_based
    assert dict(connection.endpoints) == endpoints
    assert connection.credential == spec
    assert "sp-secret-value" not in repr(connection)


def test_a_custom_connection_takes_serviceuri_as_the_alias_of_each_service():
    env = {"Jobs__serviceUri": "https://jobs.example.net", "Jobs__credential": "managedidentity"}
    connection = resolve_connection(env, "Jobs")
    assert connection.endpoint("queue") == "https://jobs.example.net"
    assert connection.endpoint("table") == "https://jobs.example.net"


def test_a_connection_string_wins_over_the_identity_settings():
    env = {H: "UseDevelopmentStorage=true", **BICEP}
    connection = resolve_connection(env, H)
    assert not connection.identity_based
    assert connection.connection_string == DEV_STORAGE_CONNECTION_STRING
    assert resolve_connection_string(env, H) == DEV_STORAGE_CONNECTION_STRING


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, [H]),
        ({f"{H}__credential": "managedidentity"}, [f"{H}__queueServiceUri", f"{H}__accountName"]),
        ({f"{H}__accountName": "Not_An_Account!"}, [f"{H}__accountName"]),
        ({f"{H}__accountName": "stacct", f"{H}__credential": "secret"}, [f"{H}__credential"]),
        (
            {
                f"{H}__accountName": "stacct",
                f"{H}__credential": "managedidentity",
                f"{H}__clientId": "a",
                f"{H}__managedIdentityResourceId": "b",
            },
            [f"{H}__clientId", f"{H}__managedIdentityResourceId"],
        ),
        (
            {f"{H}__accountName": "stacct", f"{H}__clientSecret": "sp-secret-value"},
            [f"{H}__tenantId", f"{H}__clientId"],
        ),
        ({f"{H}__queueServiceUri": "http://stacct.queue.core.windows.net"}, [f"{H}__queue"]),
        ({"Jobs__accountName": "stacct"}, ["Jobs__accountName", "Jobs__queueServiceUri"]),
    ],
)
def test_missing_or_wrong_pieces_name_the_setting_never_a_value(env, names):
    with pytest.raises(ConfigError) as info:
        resolve_connection(env, names[0].split("__")[0])
    message = str(info.value)
    for name in names:
        assert name in message
    for value in env.values():
        if len(value) > 6:
            assert value not in message


def test_an_endpoint_the_connection_lacks_is_a_config_error_naming_the_setting():
    connection = resolve_connection({f"{H}__serviceUri": "https://b.example.net"}, H)
    with pytest.raises(ConfigError, match=f"{H}__tableServiceUri or {H}__accountName"):
        connection.endpoint("table")
    with pytest.raises(ConfigError, match=f"{H}__queueServiceUri"):
        StorageJobQueue.from_settings({f"{H}__serviceUri": "https://b.example.net"}, H, "q")


# ---- the real credential types (azure.identity; constructing one sends nothing) -------------


@pytest.mark.parametrize(
    ("spec", "type_name"),
    [
        (CredentialSpec("managed_identity", client_id=CLIENT_ID), "ManagedIdentityCredential"),
        (CredentialSpec("managed_identity", resource_id="/x/id"), "ManagedIdentityCredential"),
        (CredentialSpec("default"), "DefaultAzureCredential"),
        (
            CredentialSpec("client_secret", client_id="a", tenant_id="t", client_secret="s"),
            "ClientSecretCredential",
        ),
    ],
)
def test_the_default_factory_builds_the_azure_identity_credential(spec, type_name):
    credential = default_credential_factory(spec)
    assert type(credential).__name__ == type_name
    assert type(credential).__module__.startswith("azure.identity")
    # One credential (and so one token cache) per connection shape in the process.
    assert default_credential_factory(spec) is credential


def test_a_user_assigned_identity_asks_the_functions_endpoint_for_its_client_id(monkeypatch):
    # The Functions host exposes the identity endpoint as IDENTITY_ENDPOINT/IDENTITY_HEADER.
    endpoint = "http://127.0.0.1:8081/msi/token"
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "hdr-1")
    for name in ("IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    client_id = "ffffffff-0000-1111-2222-333333333333"
    env = {**BICEP, f"{H}__clientId": client_id}
    spec = resolve_connection(env, H).credential
    assert spec is not None
    credential = default_credential_factory(spec)
    with responses.RequestsMock() as rsps:
        rsps.get(
            endpoint,
            json={"access_token": "mi-tok", "expires_on": "4102444800", "token_type": "Bearer"},
        )
        assert credential.get_token("https://storage.azure.com/.default").token == "mi-tok"
        request = rsps.calls[0].request
    assert request.headers["X-IDENTITY-HEADER"] == "hdr-1"
    assert f"client_id={client_id}" in request.url
    assert "resource=https://storage.azure.com" in request.url


# ---- every from_settings on the identity ----------------------------------------------------


def _stores(env: dict[str, str], factory: Recorder) -> list[Any]:
    return [
        TableReplayGuard.from_settings(env, H, credential_factory=factory),
        TableClaimStore.from_settings(env, H, credential_factory=factory),
        TableShadowStore.from_settings(env, H, credential_factory=factory),
        TableCheckpointStore.from_settings(env, H, credential_factory=factory),
        TableBudgetRows.from_settings(env, H, credential_factory=factory),
    ]


def test_every_table_store_is_built_on_the_identity_endpoint():
    factory = Recorder()
    table = LazyTable.from_settings(BICEP, H, "enrichclaims", credential_factory=factory)
    assert table.client.url == TABLES
    assert table.client.credential is factory.credential
    assert len(_stores(BICEP, factory)) == 5
    assert factory.specs == [CredentialSpec("managed_identity", client_id=CLIENT_ID)] * 6


@pytest.fixture
def storage():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def _bearer_only(call: responses.Call, token: str) -> None:
    headers = call.request.headers
    assert headers["Authorization"] == f"Bearer {token}"
    assert "SharedKey" not in headers["Authorization"]


def test_replay_guard_and_claims_call_storage_with_the_identity_token(storage):
    storage.post(f"{TABLES}/Tables", status=201, json={"TableName": "webhookreplay"})
    storage.post(f"{TABLES}/webhookreplay", status=201, json={})
    factory = Recorder()
    guard = TableReplayGuard.from_settings(BICEP, H, credential_factory=factory)
    assert guard.first_use("k-1", expires_at=4_000_000_000.0) is True
    assert [c.request.url for c in storage.calls] == [f"{TABLES}/Tables", f"{TABLES}/webhookreplay"]
    for call in storage.calls:
        _bearer_only(call, "mi-token-1")
    assert factory.credential.scopes[0] == ("https://storage.azure.com/.default",)


def test_the_job_queue_sends_with_the_identity_token(storage):
    storage.put(f"{QUEUES}/enrich-jobs", status=201)
    storage.post(f"{QUEUES}/enrich-jobs/messages", status=201, body=_put_message_reply())
    factory = Recorder()
    jobs = StorageJobQueue.from_settings(BICEP, H, "enrich-jobs", credential_factory=factory)
    assert factory.specs == []  # the client (and the credential) are built on first send
    jobs.send('{"job": 1}', delay_s=30)
    assert factory.specs == [CredentialSpec("managed_identity", client_id=CLIENT_ID)]
    put, post = storage.calls
    for call in (put, post):
        _bearer_only(call, "mi-token-1")
    assert "visibilitytimeout=30" in post.request.url
    body = post.request.body
    text = body.decode() if isinstance(body, bytes) else str(body)
    assert base64.b64encode(b'{"job": 1}').decode() in text


def test_connection_string_paths_are_unchanged():
    factory = Recorder()
    env = {H: "UseDevelopmentStorage=true", **BICEP}
    table = LazyTable.from_settings(env, H, "enrichclaims", credential_factory=factory)
    assert table.client.url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    _stores(env, factory)
    assert factory.specs == []  # the account key signs; no token credential is built


def _put_message_reply() -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?><QueueMessagesList><QueueMessage>'
        "<MessageId>m1</MessageId><InsertionTime>Mon, 01 Jan 2024 00:00:00 GMT</InsertionTime>"
        "<ExpirationTime>Mon, 08 Jan 2024 00:00:00 GMT</ExpirationTime>"
        "<PopReceipt>p1</PopReceipt><TimeNextVisible>Mon, 01 Jan 2024 00:00:30 GMT"
        "</TimeNextVisible></QueueMessage></QueueMessagesList>"
    )
