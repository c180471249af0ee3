"""Redactor scrubs every form of a secret; RedactingFilter scrubs log records; secrets_of."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

from domain.redact import (
    MARKER,
    RedactingFilter,
    Redactor,
    install_log_redaction,
    secrets_of,
)
from domain.settings import AzureOpenAISettings, ServiceNowSettings, Settings, WebhookSettings

SECRET = "a+b/c&d=e%f é✓"


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


def forms(secret: str, user: str = "svc") -> dict[str, str]:
    """The encodings a secret travels in: form bodies, query strings, JSON, basic auth."""
    raw = secret.encode("utf-8")
    return {
        "raw": secret,
        "quote": quote(secret),
        "quote safe=''": quote(secret, safe=""),
        "quote_plus": quote_plus(secret),
        "quote_plus lower-case": _lower_escapes(quote_plus(secret)),
        "quote lower-case": _lower_escapes(quote(secret, safe="")),
        "json ascii": json.dumps(secret)[1:-1],
        "json utf-8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "base64": base64.b64encode(raw).decode(),
        "base64 urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "basic user:pass": base64.b64encode(f"{user}:{secret}".encode()).decode(),
    }


@pytest.mark.parametrize(("name", "form"), forms(SECRET).items())
def test_every_form_of_a_known_secret_is_scrubbed(name, form):
    text = f'{{"detail": "echo {form} end"}}'
    clean = Redactor([SecretStr(SECRET)]).scrub(text)
    assert form not in clean
    assert clean.startswith('{"detail": "echo ')
    assert clean.endswith(' end"}')


def test_mixed_case_escapes_and_html_are_scrubbed():
    redactor = Redactor([SECRET])
    mixed = quote(SECRET, safe="").replace("%2B", "%2b").replace("%C3", "%c3")
    html = SECRET.replace("&", "&amp;")
    assert redactor.scrub(f"x {mixed} y") == f"x {MARKER} y"
    assert redactor.scrub(f"x {html} y") == f"x {MARKER} y"


def test_text_without_secrets_is_left_alone():
    redactor = Redactor(["hunter2-long-password"])
    text = "GET /api/now/table/incident: User Not Authenticated (request 42)"
    assert redactor.scrub(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc-def_ghi", "Authorization: Bearer ***"),
        ('{"Authorization": "Basic dXNlcjpwYXNz"}', '{"Authorization": "Basic ***"}'),
        ("{'authorization': 'Token 9f8e7d'}", "{'authorization': 'Token ***'}"),
        ("token was bearer AbC123== then", "token was bearer *** then"),
        (
            "grant_type=x&client_secret=s%2Bt&client_id=y",
            "grant_type=x&client_secret=***&client_id=y",
        ),
        (
            '{"access_token": "tok\\"en", "expires_in": 1}',
            '{"access_token": "***", "expires_in": 1}',
        ),
        ("{'api-key': 'abc123'}", "{'api-key': '***'}"),
        ("ENRICH_SERVICENOW__PASSWORD=hunter2", "ENRICH_SERVICENOW__PASSWORD=***"),
        (
            "DefaultEndpointsProtocol=https;AccountName=dev;AccountKey=Eby8vdM02x+/Kb==",
            "DefaultEndpointsProtocol=https;AccountName=dev;AccountKey=***",
        ),
        (
            "GET https://a.queue.core.windows.net/q?sv=1&sig=AbC%2Bd",
            "GET https://a.queue.core.windows.net/q?sv=1&sig=***",
        ),
    ],
)
def test_unknown_credentials_are_scrubbed_by_shape(text, expected):
    assert Redactor().scrub(text) == expected


def test_the_longer_of_two_overlapping_secrets_wins():
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.scrub("x abcdefgh y") == f"x {MARKER} y"


def test_short_secrets_are_scrubbed_as_whole_tokens_only():
    redactor = Redactor(["ab1"])
    assert redactor.scrub("pw=ab1 or %61%62%31") == f"pw={MARKER} or {MARKER}"
    # Inside a longer word it is left alone: blanking every "ab1" would wreck logs.
    assert redactor.scrub("tab1e") == "tab1e"


def test_secrets_of_the_marker_and_empty_values_are_ignored():
    redactor = Redactor(["", "***", None, SecretStr("")])
    assert len(redactor) == 0
    assert redactor.scrub("a *** b") == "a *** b"


def test_add_and_add_basic():
    redactor = Redactor()
    redactor.add(SecretStr("first-secret"))
    redactor.add_basic("integration.user", "pass-word-1")
    pair = base64.b64encode(b"integration.user:pass-word-1").decode()
    assert redactor.scrub(f"first-secret {pair}") == f"{MARKER} {MARKER}"
    assert len(redactor) == 2
    assert "first-secret" not in repr(redactor)


def test_excerpt_of_a_huge_body_scrubs_a_head_only_when_that_is_safe():
    secret = "0123456789abcdef"
    page = "<html>" + f"{secret} " * 200_000 + "</html>"
    assert Redactor([secret]).excerpt(page) == "<html>" + "*** " * 48 + "**"
    # Scrubbing shrinks the first head below the cut: the excerpt must look further instead of
    # returning the head with the secret it cut in half at its end.
    long_secret = "".join(chr(0x41 + i % 26) for i in range(100))
    body = "x" + long_secret * 60 + "tail"
    excerpt = Redactor([long_secret]).excerpt(body)
    assert excerpt == "x" + "***" * 60 + "tail"


def test_excerpt_scrubs_before_it_cuts():
    secret = "0123456789abcdef"
    text = "x" * 190 + secret
    excerpt = Redactor([secret]).excerpt(text, 200)
    assert len(excerpt) <= 200
    assert "0123" not in excerpt  # a cut-then-scrub would leave "0123456789"


_ENCODINGS = list(forms("x"))


@given(
    secret=st.text(min_size=4, max_size=40),
    prefix=st.text(max_size=20),
    suffix=st.text(max_size=20),
    user=st.text(alphabet=st.characters(codec="utf-8", exclude_characters=":"), max_size=12),
    encoding=st.sampled_from(_ENCODINGS),
)
def test_property_no_encoding_survives_scrub(secret, prefix, suffix, user, encoding):
    encoded = forms(secret, user)
    clean = Redactor([secret]).scrub(prefix + encoded[encoding] + suffix)
    assert [name for name, form in encoded.items() if form in clean] == []


@given(secret=st.text(min_size=4, max_size=40), text=st.text(max_size=60))
def test_property_scrub_is_idempotent(secret, text):
    redactor = Redactor([secret])
    once = redactor.scrub(text)
    assert redactor.scrub(once) == once


def _record(msg, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_filter_scrubs_message_args_and_exception_text():
    redactor = Redactor([SECRET])
    try:
        raise RuntimeError(f"echoed {quote_plus(SECRET)}")
    except RuntimeError as exc:
        record = _record("moved to poison: %s (%r)", exc, SECRET, exc_info=(type(exc), exc, None))
    assert RedactingFilter(redactor).filter(record) is True
    text = logging.Formatter().format(record)
    assert SECRET not in text
    assert quote_plus(SECRET) not in text
    assert record.getMessage() == f"moved to poison: echoed {MARKER} ('{MARKER}')"
    assert "RuntimeError: echoed ***" in text
    assert record.exc_info is None  # a handler formatting exc_info itself can't bring it back


def test_filter_keeps_clean_exceptions_and_survives_bad_arguments():
    redactor = Redactor([SECRET])
    error = ValueError("nothing secret")
    record = _record("failed", exc_info=(ValueError, error, None))
    RedactingFilter(redactor).filter(record)
    assert record.exc_info is not None
    bad = _record("two %s %s", SECRET)  # one argument short: logging would print args raw
    RedactingFilter(redactor).filter(bad)
    assert SECRET not in bad.getMessage()
    assert bad.args == ()


def test_install_filters_the_logger_and_its_handlers_for_child_records():
    parent = logging.getLogger("redact-test-parent")
    parent.propagate = False
    stream = _ListHandler()
    parent.addHandler(stream)
    try:
        first = install_log_redaction(Redactor(["old-secret"]), parent)
        installed = install_log_redaction(Redactor([SECRET]), parent)
        assert first not in parent.filters  # replaced, not stacked
        assert [f for f in stream.filters if isinstance(f, RedactingFilter)] == [installed]
        # A child's record skips the parent's logger filters; the handler filter catches it.
        logging.getLogger("redact-test-parent.child").error("leak %s", SECRET)
        parent.error("direct %s", quote(SECRET, safe=""))
        assert stream.messages == [f"leak {MARKER}", f"direct {MARKER}"]
    finally:
        parent.removeHandler(stream)
        parent.filters.clear()


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


def test_secrets_of_lists_every_secret_in_settings():
    settings = Settings(
        servicenow=ServiceNowSettings(
            instance_url="https://acme.service-now.com",
            auth="oauth",
            client_id="c",
            client_secret="oauth-secret",
            password="basic-password",
        ),
        webhook=WebhookSettings(secret="hmac-secret"),
        azure_openai=AzureOpenAISettings(
            endpoint="https://x.openai.azure.com", deployment="gpt", api_key="aoai-key"
        ),
    )
    assert sorted(secrets_of(settings)) == [
        "aoai-key",
        "basic-password",
        "hmac-secret",
        "oauth-secret",
    ]
    assert secrets_of(Settings()) == []


def test_secrets_of_finds_secrets_in_fields_added_later():
    class Vault(BaseModel):
        keys: list[SecretStr]
        named: dict[str, SecretStr]

    class Future(BaseModel):
        vault: Vault
        plain: str = "not-secret"

    found = secrets_of(Future(vault=Vault(keys=["k1", "k2"], named={"a": "k3", "b": "k1"})))
    assert found == ["k1", "k2", "k3"]
