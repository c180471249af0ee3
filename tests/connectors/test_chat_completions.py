"""ChatCompletionsClient and its wiring, against `responses`: URL, auth, body, 429, redaction, cache."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import responses
from responses import matchers

from connectors.chat_completions import ChatCompletionsClient
from domain.errors import RejectedError, ThrottledError
from domain.models import Ticket
from domain.settings import HttpSettings, LlmClassifierSettings, Settings
from enrichers.llm_classifier import LlmClassifier
from tests.connectors.conftest import FakeClock
from tests.enrichers.test_llm_classifier import completion, mapping
from triage.llm_wiring import CachedCompletion, add_llm_classifier, build_llm_classifier

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-7f3a9c2e5b"
AZURE_URL = "https://contoso.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
TICKET = Ticket(title="VPN keeps dropping", description="Hi,\n\nthe VPN disconnects hourly.")


def llm_settings(**kwargs: object) -> LlmClassifierSettings:
    base: dict[str, object] = {
        "endpoint": "https://contoso.openai.azure.com",
        "deployment": "gpt-4o",
        "api_key": KEY,
        "fields": ["category", "impact"],
    }
    return LlmClassifierSettings.model_validate({**base, **kwargs})


def client(clock: FakeClock, **kwargs: object) -> ChatCompletionsClient:
    return ChatCompletionsClient(
        llm_settings(**kwargs),
        HttpSettings(max_attempts=3),
        session=requests.Session(),
        sleep=clock.sleep,
    )


def answer() -> dict[str, object]:
    return completion({"category": "network", "impact": "low"}, {"network": math.log(0.9)})


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def test_azure_request_carries_the_classifier_body_key_header_and_api_version(
    rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    rsps.post(
        AZURE_URL,
        json=answer(),
        match=[
            matchers.query_param_matcher({"api-version": "2024-10-21"}),
            matchers.header_matcher({"api-key": KEY}),
        ],
    )
    chat = client(clock)
    clf = LlmClassifier(mapping(), chat.complete, fields=["category", "impact"])
    suggestions = {s.field: s.value for s in clf.enrich(TICKET, {})}
    assert suggestions == {"category": "network", "impact": "low"}
    sent = json.loads(rsps.calls[0].request.body)
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["category"]["enum"] == ["network", "hardware", "software"]
    assert schema["properties"]["impact"]["enum"] == ["high", "medium", "low"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 5
    assert "model" not in sent  # Azure: the deployment is in the URL
    assert "Authorization" not in rsps.calls[0].request.headers


def test_openai_flavour_uses_bearer_and_the_model_field(
    rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    rsps.post(
        "https://llm.example.com/v1/chat/completions",
        json=answer(),
        match=[matchers.header_matcher({"Authorization": f"Bearer {KEY}"})],
    )
    chat = client(clock, endpoint="https://llm.example.com/v1", flavour="openai")
    chat.complete({"messages": []})
    sent = json.loads(rsps.calls[0].request.body)
    assert sent["model"] == "gpt-4o"
    assert "api-key" not in rsps.calls[0].request.headers


def test_a_long_429_surfaces_at_once_as_throttled_with_retry_after(
    rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    rsps.post(AZURE_URL, status=429, headers={"Retry-After": "120"}, json={"error": {}})
    with pytest.raises(ThrottledError) as caught:
        client(clock).complete({"messages": []})
    assert caught.value.retry_after_s == 120.0
    assert len(rsps.calls) == 1 and clock.waits == []


def test_a_short_429_is_waited_out_then_answered(
    rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    rsps.post(AZURE_URL, status=429, headers={"Retry-After": "2"})
    rsps.post(AZURE_URL, json=answer())
    assert client(clock).complete({"messages": []})["choices"]
    assert clock.waits == [2.0]


def test_the_key_never_reaches_errors_or_logs(
    rsps: responses.RequestsMock, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    echo = {"error": {"code": "BadRequest", "message": f"bad header api-key {KEY}"}}
    rsps.post(AZURE_URL, status=503, json=echo)
    rsps.post(AZURE_URL, status=400, json=echo)
    caplog.set_level(logging.DEBUG)
    chat = client(clock)
    with pytest.raises(RejectedError) as caught:
        chat.complete({"messages": []})
    text = f"{caught.value} {caught.value!r} {chat!r} {caplog.text}"
    assert KEY not in text
    assert "BadRequest" in str(caught.value)


def test_a_content_filtered_prompt_is_an_abstention_not_a_rejection(
    rsps: responses.RequestsMock, clock: FakeClock
) -> None:
    filtered = {"error": {"code": "content_filter", "message": "filtered"}}
    rsps.post(AZURE_URL, status=400, json=filtered)
    clf = LlmClassifier(mapping(), client(clock).complete, fields=["category"])
    assert clf.enrich(TICKET, {}) == []
    assert "content filter" in clf.explain(TICKET, {})["category"]


def test_cache_hit_sends_no_second_request(rsps: responses.RequestsMock, clock: FakeClock) -> None:
    rsps.post(AZURE_URL, json=answer())
    rsps.post(AZURE_URL, status=429, headers={"Retry-After": "600"})
    cached = CachedCompletion(client(clock).complete, maxsize=8)
    for _ in range(3):  # a new classifier each time: only the cache can save the request
        clf = LlmClassifier(mapping(), cached, fields=["category", "impact"])
        assert {s.value for s in clf.enrich(TICKET, {})} == {"network", "low"}
    assert len(rsps.calls) == 1 and (cached.hits, cached.misses) == (2, 1)
    other = Ticket(title="Printer jammed", description="")
    with pytest.raises(ThrottledError):  # a different input is a miss, and errors are not kept
        LlmClassifier(mapping(), cached, fields=["category"]).enrich(other, {})
    assert len(cached) == 1


def test_cache_evicts_the_least_recently_used() -> None:
    calls: list[str] = []

    def complete(request: object) -> dict[str, object]:
        calls.append(json.dumps(request))
        return {}

    cached = CachedCompletion(complete, maxsize=2)
    for name in ("a", "b", "a", "c", "a", "b"):
        cached({"k": name})
    assert [json.loads(c)["k"] for c in calls] == ["a", "b", "c", "b"]


def test_wiring_is_off_without_settings_and_inserts_before_priority() -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

    chain = [Named("keywords"), Named("model"), Named("priority"), Named("summary")]
    assert build_llm_classifier(Settings(), mapping()) is None
    assert add_llm_classifier(list(chain), mapping(), Settings()) == chain  # type: ignore[arg-type]
    settings = Settings(llm=llm_settings())
    added = add_llm_classifier(list(chain), mapping(), settings, complete=lambda r: answer())  # type: ignore[arg-type]
    assert [e.name for e in added] == ["keywords", "model", "llm", "priority", "summary"]


def test_nothing_of_the_llm_is_imported_when_it_is_off() -> None:
    code = (
        "import sys\n"
        "from domain.settings import Settings\n"
        "from domain.mapping import load_mapping\n"
        "from triage.llm_wiring import add_llm_classifier\n"
        "assert add_llm_classifier([], load_mapping(None), Settings()) == []\n"
        "loaded = [m for m in ('connectors.chat_completions', 'enrichers.llm_classifier',"
        " 'requests') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_settings_refuse_an_unresolved_key_vault_reference_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="unresolved Key Vault reference") as caught:
        llm_settings(api_key="@Microsoft.KeyVault(SecretUri=https://kv/secrets/llm)")
    assert "SecretUri" not in str(caught.value)
