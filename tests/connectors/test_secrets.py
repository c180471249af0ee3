"""A server that echoes our requests must not put a secret into exception text or logs.

The echo puts the Authorization credentials, the raw request body and the decoded form into a
400/401/500 error body, in the Table API shape, the OAuth shape or as plain text; the error the
connector raises, and the log lines of "moved to poison", must hold no form of any secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, quote, quote_plus

import pytest
import responses

from connectors.servicenow import ServiceNowConnector
from domain.errors import ConnectorError
from domain.redact import MARKER, Redactor, install_log_redaction, secrets_of
from domain.settings import ServiceNowSettings, Settings
from tests.connectors.conftest import INSTANCE

USER = "svc.integration"
# requests encodes a basic-auth password as Latin-1, so this one stays within it.
PASSWORD = "Pw+/&=%2Fé Zq7Lp9Xk"
CLIENT_SECRET = "Zq7+Lp/Wd&Xe=Mv%2Bé✓ Rk9"
TOKEN = "tok+/Abc=123_XYZ-987"
SYS_ID = "0" * 32
TABLE_URL = re.compile(rf"{re.escape(INSTANCE)}/api/now/table/incident.*")
TOKEN_URL = f"{INSTANCE}/oauth_token.do"
STATUSES = [400, 401, 500]
SHAPES = ["table", "oauth", "text"]


def _lower(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


def leaks(text: str, secret: str, user: str = USER) -> list[str]:
    """The names of the forms of ``secret`` found in ``text``."""
    forms = {
        "raw": secret,
        "quote": quote(secret),
        "quote safe=''": quote(secret, safe=""),
        "quote_plus": quote_plus(secret),
        "quote_plus lower-case": _lower(quote_plus(secret)),
        "json": json.dumps(secret)[1:-1],
        "base64": base64.b64encode(secret.encode()).decode(),
        "basic utf-8": base64.b64encode(f"{user}:{secret}".encode()).decode(),
    }
    with contextlib.suppress(UnicodeEncodeError):
        forms["basic latin-1"] = base64.b64encode(f"{user}:{secret}".encode("latin-1")).decode()
    return [name for name, form in forms.items() if form in text]


def echo(status: int, shape: str) -> Callable[[object], tuple[int, dict[str, str], str]]:
    """A callback answering ``status`` with everything the request carried."""

    def callback(request) -> tuple[int, dict[str, str], str]:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        decoded = ""
        if scheme == "Basic":
            decoded = base64.b64decode(credentials).decode("latin-1")
        body = request.body or ""
        body = body.decode() if isinstance(body, bytes) else body
        form = json.dumps(parse_qs(body))
        sent = f"echo {credentials} {decoded} {body} {form}"
        headers = json.dumps(dict(request.headers))
        if shape == "table":
            payload = {"error": {"message": sent, "detail": headers}, "status": "failure"}
        elif shape == "oauth":
            payload = {"error": "invalid_request", "error_description": f"{sent} {headers}"}
        else:
            return status, {"Content-Type": "text/plain"}, f"{sent} {headers}"
        return status, {"Content-Type": "application/json"}, json.dumps(payload)

    return callback


@pytest.fixture
def server() -> Iterator[responses.RequestsMock]:
    """Callbacks answer every call (retries included), not once each."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _connector(settings: ServiceNowSettings, http_settings, clock) -> ServiceNowConnector:
    return ServiceNowConnector(
        settings,
        http_settings,
        sleep=clock.sleep,
        now=clock.now,
        monotonic=clock.monotonic,
    )


BASIC = ServiceNowSettings(instance_url=INSTANCE, auth="basic", username=USER, password=PASSWORD)
OAUTH = ServiceNowSettings(
    instance_url=INSTANCE, auth="oauth", client_id="client-1", client_secret=CLIENT_SECRET
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


def _log_like_the_worker(exc: Exception, raw_echo: str, settings: ServiceNowSettings) -> _Records:
    """Log the error as the queue worker does, through the runtime's redaction filter.

    Also logs an exception that was *not* scrubbed at the source (a raw echo), which only the
    filter can clean, the way a library's own exception would arrive.
    """
    logger = logging.getLogger(f"secrets-test-{uuid.uuid4().hex}")
    logger.propagate = False
    handler = _Records()
    logger.addHandler(handler)
    install_log_redaction(Redactor(secrets_of(Settings(servicenow=settings))), logger)
    child = logging.getLogger(f"{logger.name}.service")
    child.error("moved to poison: %s", exc, exc_info=exc)
    try:
        raise RuntimeError(f"raw echo: {exc.__dict__} {raw_echo}")
    except RuntimeError:
        child.exception("unexpected failure")
    return handler


def _assert_clean(text: str, secret: str, also: tuple[str, ...] = ()) -> None:
    assert leaks(text, secret) == []
    for extra in also:
        assert extra not in text


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("status", STATUSES)
def test_basic_auth_echo_leaks_nothing(server, http_settings, clock, status, shape):
    server.add_callback("GET", TABLE_URL, callback=echo(status, shape))
    with pytest.raises(ConnectorError) as info:
        _connector(BASIC, http_settings, clock).get("incident", SYS_ID, ["number"])
    text = f"{info.value} {info.value!r}"
    _assert_clean(text, PASSWORD)
    assert "echo" in text
    assert MARKER in text  # the echo reached the message and was scrubbed there

    raw = server.calls[0].response.text
    assert leaks(raw, PASSWORD)  # the echo really carried the password
    handler = _log_like_the_worker(info.value, raw, BASIC)
    for record, line in zip(handler.records, handler.lines, strict=True):
        _assert_clean(record.getMessage(), PASSWORD)
        _assert_clean(line, PASSWORD)  # message plus formatted exception
    assert "RuntimeError: raw echo" in handler.lines[1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("status", STATUSES)
def test_oauth_token_endpoint_echo_leaks_nothing(server, http_settings, clock, status, shape):
    server.add_callback("POST", TOKEN_URL, callback=echo(status, shape))
    with pytest.raises(ConnectorError) as info:
        _connector(OAUTH, http_settings, clock).get("incident", SYS_ID, ["number"])
    text = f"{info.value} {info.value!r}"
    _assert_clean(text, CLIENT_SECRET)
    assert "token request refused: " in text
    assert MARKER in text

    raw = server.calls[0].response.text
    assert "client_secret=Zq7%2BLp%2FWd%26Xe%3DMv%252B%C3%A9%E2%9C%93+Rk9" in raw
    handler = _log_like_the_worker(info.value, raw, OAUTH)
    for record, line in zip(handler.records, handler.lines, strict=True):
        _assert_clean(record.getMessage(), CLIENT_SECRET)
        _assert_clean(line, CLIENT_SECRET)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("status", STATUSES)
def test_oauth_table_echo_leaks_no_token(server, http_settings, clock, status, shape):
    server.post(TOKEN_URL, json={"access_token": TOKEN, "expires_in": 1800})
    server.add_callback("GET", TABLE_URL, callback=echo(status, shape))
    with pytest.raises(ConnectorError) as info:
        _connector(OAUTH, http_settings, clock).get("incident", SYS_ID, ["number"])
    text = f"{info.value} {info.value!r}"
    _assert_clean(text, CLIENT_SECRET, also=(TOKEN, quote_plus(TOKEN), TOKEN[:8]))
    assert "echo" in text


def test_the_connector_shares_its_redactor_and_fills_it(http_settings, clock):
    shared = Redactor()
    ServiceNowConnector(BASIC, http_settings, redactor=shared)
    b64 = base64.b64encode(f"{USER}:{PASSWORD}".encode("latin-1")).decode()
    assert shared.scrub(f"{PASSWORD} {b64}") == f"{MARKER} {MARKER}"
