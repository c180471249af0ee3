"""AzureOpenAISummarizer: request shape and error mapping, against `responses` (no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses
from pydantic import SecretStr
from responses import matchers

from domain.errors import (
    AuthError,
    ConfigError,
    RejectedError,
    ThrottledError,
    UnavailableError,
)
from enrichers.azure_openai import SYSTEM_PROMPT, AzureOpenAISummarizer
from enrichers.summary import ExtractiveSummarizer, FallbackSummarizer

ENDPOINT = "https://contoso.openai.azure.com/"
URL = "https://contoso.openai.azure.com/openai/deployments/gpt-4o-mini/chat/completions"
KEY = "test-key-123"
EMAIL = """Hi team,

Outlook crashes every time I open the shared calendar.

Best regards
John Smith
+45 12 34 56 78
"""


def completion(content: str, finish_reason: str = "stop") -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": content},
            }
        ],
    }


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def make(session: requests.Session | None = None, **kwargs: Any) -> AzureOpenAISummarizer:
    return AzureOpenAISummarizer(
        ENDPOINT, "gpt-4o-mini", SecretStr(KEY), session=session or requests.Session(), **kwargs
    )


def test_request_shape_and_parsed_summary(rsps):
    rsps.add(
        responses.POST,
        URL,
        json=completion('"Outlook crashes when opening the shared calendar."\nextra line'),
        match=[
            matchers.query_param_matcher({"api-version": "2024-10-21"}),
            matchers.header_matcher({"api-key": KEY, "Content-Type": "application/json"}),
        ],
    )
    candidate = make().summarize("", EMAIL)
    assert candidate is not None
    assert candidate.text == "Outlook crashes when opening the shared calendar"
    assert candidate.method == "azure-openai"
    assert candidate.confidence == 0.8
    body = json.loads(rsps.calls[0].request.body)
    assert body["temperature"] == 0
    assert body["max_tokens"] == 120
    system, user = body["messages"]
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    # The e-mail is cleaned before it leaves: no greeting, signature or phone number.
    assert user["content"] == (
        "Title: (none)\n\nDescription:\nOutlook crashes every time I open the shared calendar."
    )
    assert "160 characters" in SYSTEM_PROMPT and "same language" in SYSTEM_PROMPT


def test_input_is_truncated_and_title_passed(rsps):
    rsps.add(responses.POST, URL, json=completion("Printer jams"))
    make(max_input_chars=50).summarize("Printer", "The printer jams. " * 100)
    user = json.loads(rsps.calls[0].request.body)["messages"][1]["content"]
    assert user.startswith("Title: Printer\n\nDescription:\n")
    assert len(user.split("Description:\n", 1)[1]) == 50


def test_nothing_to_summarize_makes_no_request(rsps):
    assert make().summarize("", "Hi,\nThanks") is None
    assert len(rsps.calls) == 0


def test_long_answers_are_clipped_and_labels_stripped(rsps):
    rsps.add(responses.POST, URL, json=completion("Short description: " + "word " * 60))
    candidate = make().summarize("", EMAIL)
    assert candidate is not None
    assert len(candidate.text) <= 160
    assert candidate.text.startswith("word word")


@pytest.mark.parametrize(
    ("content", "summary"),
    [
        ("[code]<img src=x onerror=alert(1)>[/code] Outlook crashes\u202e\x1b", "Outlook crashes"),
        ("<b>Outlook</b> &lt;script&gt;crashes&lt;/script&gt; on the calendar", "Outlook crashes on the calendar"),
        ("[auto-triage] Filled automatically; Outlook crashes", "Outlook crashes"),
        ("<p\nclass=x>\n\nOutlook crashes\nsecond line", "Outlook crashes"),
    ],
)  # fmt: skip
def test_the_model_output_is_sanitised_like_ticket_text(rsps, content, summary):
    rsps.add(responses.POST, URL, json=completion(content))
    candidate = make().summarize("", EMAIL)
    assert candidate is not None
    assert candidate.text == summary


def test_an_answer_that_is_only_markup_abstains(rsps):
    rsps.add(responses.POST, URL, json=completion("[code]<img src=x onerror=alert(1)>[/code]"))
    assert make().summarize("", EMAIL) is None


@pytest.mark.parametrize(
    "data",
    [completion("", "stop"), completion("Anything", "content_filter"), completion("   \n  ")],
)
def test_empty_or_filtered_answers_abstain(rsps, data):
    rsps.add(responses.POST, URL, json=data)
    assert make().summarize("", EMAIL) is None


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"retry-after-ms": "1500", "retry-after": "2"}, ThrottledError, 1.5),
        (429, {"retry-after": "7"}, ThrottledError, 7.0),
        (429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, ThrottledError, None),
        (401, {}, AuthError, None),
        (403, {}, AuthError, None),
        (400, {}, RejectedError, None),
        (404, {}, RejectedError, None),
        (500, {}, UnavailableError, None),
        (503, {}, UnavailableError, None),
    ],
)
def test_http_errors_are_mapped(rsps, status, headers, error, retry_after):
    rsps.add(
        responses.POST,
        URL,
        json={"error": {"code": "x", "message": "m" * 500}},
        status=status,
        headers={"apim-request-id": "req-42", **headers},
    )
    with pytest.raises(error) as info:
        make().summarize("", EMAIL)
    exc = info.value
    assert exc.status_code == status
    assert exc.request_id == "req-42"
    assert exc.system == "azure-openai"
    assert len(exc.message) <= 200
    assert KEY not in str(exc)
    if isinstance(exc, ThrottledError):
        assert exc.retry_after_s == retry_after


@pytest.mark.parametrize(
    "failure", [requests.ConnectTimeout(), requests.ReadTimeout(), requests.ConnectionError()]
)
def test_transport_failures_are_unavailable(rsps, failure):
    rsps.add(responses.POST, URL, body=failure)
    with pytest.raises(UnavailableError, match=type(failure).__name__):
        make().summarize("", EMAIL)


@pytest.mark.parametrize("body", ["not json", json.dumps({"choices": []}), json.dumps([1])])
def test_malformed_responses_are_unavailable(rsps, body):
    rsps.add(responses.POST, URL, body=body, status=200)
    with pytest.raises(UnavailableError):
        make().summarize("", EMAIL)


def test_the_timeout_is_passed_to_requests():
    seen: dict[str, object] = {}

    class RecordingSession(requests.Session):
        def post(self, url, *args, **kwargs):
            seen.update(kwargs)
            raise requests.ReadTimeout()

    with pytest.raises(UnavailableError):
        make(RecordingSession(), timeout=(1.0, 2.0)).summarize("", EMAIL)
    assert seen["timeout"] == (1.0, 2.0)


@pytest.mark.parametrize(
    ("endpoint", "deployment", "key"),
    [("http://plain.example", "d", "k"), (ENDPOINT, "", "k"), (ENDPOINT, "d", "")],
)
def test_bad_configuration_is_refused(endpoint, deployment, key):
    with pytest.raises(ConfigError):
        AzureOpenAISummarizer(endpoint, deployment, key, session=requests.Session())


def test_the_key_never_appears_in_repr():
    assert KEY not in repr(make())


def test_falls_back_to_the_extractive_summary_on_a_server_error(rsps):
    rsps.add(responses.POST, URL, status=503)
    chain = FallbackSummarizer(make(), ExtractiveSummarizer())
    candidate = chain.summarize("", EMAIL)
    assert candidate is not None
    assert candidate.method == "extractive"
    assert candidate.text == "Outlook crashes every time I open the shared calendar"


def test_an_error_body_echoing_the_api_key_does_not_leak_it(rsps):
    key = "k3y+with/odd&chars=0123456789"

    def echo(request):
        body = {"error": {"message": f"bad request; headers {dict(request.headers)}"}}
        return 401, {}, json.dumps(body)

    rsps.add_callback(responses.POST, URL, callback=echo)
    summarizer = AzureOpenAISummarizer(
        ENDPOINT, "gpt-4o-mini", SecretStr(key), session=requests.Session()
    )
    with pytest.raises(AuthError) as info:
        summarizer.summarize("", EMAIL)
    assert key not in str(info.value)
    assert key[:12] not in str(info.value)
