"""Dataverse webhook invariants over arbitrary requests, through ``function_app.dynamics_webhook``.

The host hands the function a ``func.HttpRequest`` (headers, query string, body); whatever it
holds: the function never raises and never answers 5xx; it never answers 2xx to a request that
does not carry a configured key; every answer is small JSON echoing nothing long from the input;
a valid context with the key is accepted (202, one job for its case) unless our own application
user caused it (200, no job); and no log record is long or carries the key. Each example builds
a fresh service on a fake connector (system ``dataverse``), so no state carries over.
"""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func
from hypothesis import given
from hypothesis import strategies as st

import function_app
from connectors.queue import InMemoryJobQueue
from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH, FieldMapping, load_mapping
from domain.settings import DataverseWebhookSettings, Settings
from tests.fakes import FakeConnector
from tests.property import ECHO_CHARS, Out, assert_logs_are_bounded, captured_logs, installed
from tests.property.strategies import long_values
from tests.property.test_dataverse_webhook_properties import (
    arbitrary_bodies,
    arbitrary_headers,
    guids,
    mutated_contexts,
    valid_contexts,
)
from triage.dataverse_inbound import WebhookKeys
from triage.pipeline import Pipeline
from triage.service import Service

KEY = "dataverse-function-key-0123456789"
OLD_KEY = "dataverse-function-old-key-98765"
OWN_USER = "0d0d0d0d-1111-4222-8333-444444444444"  # our application user (WhoAmI)
MAX_REPLY_BYTES = 500
_MAPPING: list[FieldMapping] = []
_SETTINGS = Settings(dataverse_webhook=DataverseWebhookSettings())
MAX_BYTES = _SETTINGS.dataverse_webhook.max_body_bytes


def _mapping() -> FieldMapping:
    if not _MAPPING:  # immutable; parsing the YAML per example would dominate run time
        _MAPPING.append(load_mapping(DYNAMICS_DEFAULT_MAPPING_PATH))
    return _MAPPING[0]


def make_service(keys: WebhookKeys) -> Service:
    """A fresh Service whose Dataverse pipeline runs on a fake connector (WhoAmI = OWN_USER)."""
    connector = FakeConnector({})
    connector.system = "dataverse"
    connector.own_user_id = OWN_USER
    pipeline = Pipeline(connector, _mapping(), [])
    return Service(
        _SETTINGS,
        pipeline,
        InMemoryJobQueue(),
        InMemoryJobQueue(),
        now=lambda: 1_800_000_000.5,
        dataverse_keys=keys,
    )


def call(
    keys: WebhookKeys, body: bytes, headers: dict[str, str], query: dict[str, str]
) -> tuple[int, bytes, str | None]:
    """(status, reply body, job queued) of one call through function_app; logs checked."""
    request = func.HttpRequest(
        method="POST", url="/api/dynamics/webhook", headers=headers, params=query, body=body
    )
    out = Out()
    with captured_logs() as records, installed(make_service(keys)):
        resp = function_app.dynamics_webhook(request, out)
    assert_logs_are_bounded(records, *keys.keys, *_long(body, headers, query))
    status, payload = resp.status_code, resp.get_body()
    assert 200 <= status < 500, status
    assert len(payload) <= MAX_REPLY_BYTES
    reply = json.loads(payload)
    text = json.dumps(reply, ensure_ascii=False)
    for echo in _long(body, headers, query):
        assert echo not in text
    assert all(k not in text for k in keys.keys)
    if status >= 400:
        error = reply["error"]
        assert error["code"] and 0 < len(error["message"]) <= 300
        assert out.value is None
    return status, payload, out.value


def _long(body: bytes, headers: dict[str, str], query: dict[str, str]) -> list[str]:
    """Prefixes one character longer than an echo may be, of everything we must not echo."""
    texts = [v for v in (*headers.values(), *query.values()) if len(v) > ECHO_CHARS]
    text = body.decode("utf-8", errors="replace")
    if len(text) > ECHO_CHARS:
        texts.append(text)
    return [t[: ECHO_CHARS + 1] for t in texts]


def _carries_a_key(keys: WebhookKeys, headers: dict[str, str], query: dict[str, str]) -> bool:
    present = " ".join([*headers.values(), *query.values()])
    return any(k in present for k in keys.keys)


_key_configs = st.sampled_from(
    [
        WebhookKeys(keys=(KEY,)),
        WebhookKeys(keys=(OLD_KEY, KEY), header="x-hook-key"),
        WebhookKeys(keys=(KEY,), source="code"),
    ]
)
_queries = st.dictionaries(
    st.sampled_from(["code", "key", "clientid", "$select"]) | st.text(max_size=10),
    st.text(max_size=60) | long_values,
    max_size=3,
)


def _with_key(keys: WebhookKeys, headers: dict[str, str], query: dict[str, str]) -> tuple[
    dict[str, str], dict[str, str]
]:  # fmt: skip
    """The request carrying the current key where ``keys`` expects it."""
    if keys.source == "code":
        return headers, {**query, "code": keys.keys[-1]}
    headers = {k: v for k, v in headers.items() if k.lower() != keys.header}
    return {**headers, keys.header: keys.keys[-1]}, query


def _json_headers(headers: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return {**kept, "Content-Type": "application/json"}


@given(_key_configs, arbitrary_bodies, arbitrary_headers, _queries)
def test_requests_without_a_key_are_never_accepted(keys, body, headers, query):
    if _carries_a_key(keys, headers, query):
        return  # hypothesis does not find a 30-character key by chance; keep it exact
    status, _, job = call(keys, body, headers, query)
    assert status in (401, 413) and job is None


@given(_key_configs, arbitrary_bodies, arbitrary_headers, _queries)
def test_requests_with_the_key_never_fail_the_host(keys, body, headers, query):
    headers, query = _with_key(keys, headers, query)
    status, payload, job = call(keys, body, headers, query)
    assert (job is not None) == (status == 202), (status, payload)


@given(_key_configs, valid_contexts(), arbitrary_headers, _queries)
def test_a_valid_context_with_the_key_is_accepted_for_its_case(keys, context, headers, query):
    # Any other headers; the x-ms-dynamics-* ones Dataverse sets must agree with the body.
    headers = {k: v for k, v in headers.items() if not k.lower().startswith("x-ms-dynamics-")}
    headers, query = _with_key(keys, _json_headers(headers), query)
    status, payload, job = call(keys, json.dumps(context).encode(), headers, query)
    record = {k.lower(): v for k, v in context.items()}["primaryentityid"].lower()
    assert status == 202, payload
    assert job is not None and json.loads(job)["record_id"] == record
    assert json.loads(job)["system"] == "dataverse"


@given(_key_configs, valid_contexts(), st.sampled_from(["UserId", "InitiatingUserId"]))
def test_an_event_our_own_user_caused_is_acknowledged_without_a_job(keys, context, field):
    lowered = {k.lower(): k for k in context}
    context[lowered[field.lower()]] = OWN_USER.upper()
    headers, query = _with_key(keys, {"Content-Type": "application/json"}, {})
    status, _, job = call(keys, json.dumps(context).encode(), headers, query)
    assert status == 200 and job is None


@given(_key_configs, mutated_contexts(), _queries)
def test_mutated_contexts_with_the_key_are_202_or_4xx(keys, body, query):
    headers, query = _with_key(keys, {"Content-Type": "application/json"}, query)
    status, _, job = call(keys, body, headers, query)
    assert status in (200, 202) or 400 <= status < 500
    if job is not None:
        assert json.loads(job)["record_id"] in body.decode().lower()


@given(_key_configs, st.booleans(), st.integers(1, 4096), guids)
def test_oversize_bodies_are_413_with_or_without_the_key(keys, keyed, extra, record):
    context: dict[str, Any] = {"MessageName": "Create", "PrimaryEntityId": record}
    context["Padding"] = "x" * (MAX_BYTES + extra)
    headers: dict[str, str] = {"Content-Type": "application/json"}
    query: dict[str, str] = {}
    if keyed:
        headers, query = _with_key(keys, headers, query)
    status, _, job = call(keys, json.dumps(context).encode(), headers, query)
    assert status == 413 and job is None
