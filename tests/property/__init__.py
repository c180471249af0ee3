"""Property-based tests of everything that takes untrusted input, and their reusable helpers.

``make_service`` builds a Service on fakes and in-memory queues (the production queue size
check included); ``signed_headers`` / ``mac_headers`` build the business rule's headers;
``installed`` puts a service behind ``function_app`` for one call; ``captured_logs`` collects
every log record of a block. Build a fresh service per example so state (a replay guard, the
loop guard) never carries over from one example to the next.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import azure.functions as func

import function_app
from connectors.queue import InMemoryJobQueue
from domain.mapping import FieldMapping, load_mapping
from domain.settings import Settings, WebhookSettings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from triage.inbound import sign
from triage.jobs import EnrichJob
from triage.pipeline import Pipeline
from triage.service import Service

NOW = 1_800_000_000
SECRET = "property-hook-secret-0123456789"
SYS_ID = "0123456789abcdef0123456789abcdef"
MAX_BODY_BYTES = 64 * 1024
#: Anything echoed from the input is cut to this many characters.
ECHO_CHARS = 40


@cache
def _mapping() -> FieldMapping:
    return load_mapping()  # immutable; parsing the YAML per example would dominate run time


@cache
def _settings(secret: str) -> Settings:
    return Settings(webhook=WebhookSettings(secret=secret, max_body_bytes=MAX_BODY_BYTES))


def make_service(*, secret: str = SECRET, now: float = NOW + 0.5) -> Service:
    """A fresh Service on fakes: one incident (SYS_ID) whose category the enricher fills.

    The clock is a float like time.time (int - float arithmetic is what overflowed).
    """
    connector = FakeConnector(
        {SYS_ID: {"category": "", "description": "vpn down", "sys_updated_by": "bob"}}
    )
    pipeline = Pipeline(connector, _mapping(), [FixedEnricher([suggestion("category", "network")])])
    return Service(
        _settings(secret), pipeline, InMemoryJobQueue(), InMemoryJobQueue(), now=lambda: now
    )


def mac_headers(
    body: bytes, *, stamp: str, secret: str = SECRET, content_type: str = "application/json"
) -> dict[str, str]:
    """Headers whose MAC covers ``"<stamp>." + body`` exactly as spelled (any spelling)."""
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).digest()
    return {
        "Content-Type": content_type,
        "X-Triage-Timestamp": stamp,
        "X-Triage-Signature": "v1=" + base64.b64encode(mac).decode(),
    }


def signed_headers(
    body: bytes,
    *,
    timestamp: int = NOW,
    secret: str = SECRET,
    content_type: str = "application/json",
) -> dict[str, str]:
    """What the business rule sends for ``body`` at ``timestamp``."""
    return {
        "Content-Type": content_type,
        "X-Triage-Timestamp": str(timestamp),
        "X-Triage-Signature": sign(body, secret.encode(), timestamp),
    }


def valid_job(**overrides: Any) -> dict[str, Any]:
    """The fields of a job the worker accepts, as JSON-ready values."""
    return {
        **json.loads(EnrichJob(table="incident", record_id=SYS_ID, received_at=NOW).to_message()),
        **overrides,
    }


class Out:
    """A ``func.Out`` that keeps what was set."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


@contextmanager
def installed(service: Service) -> Iterator[Service]:
    """``function_app`` uses ``service`` inside the block."""
    function_app.services.override(service)
    try:
        yield service
    finally:
        function_app.services.override(None)


def http_request(body: bytes, headers: dict[str, str]) -> func.HttpRequest:
    """The HttpRequest the host would hand the webhook."""
    return func.HttpRequest(
        method="POST", url="/api/servicenow/webhook", headers=headers, body=body
    )


def queue_message(body: bytes) -> func.QueueMessage:
    """The QueueMessage the host would hand the worker (first delivery)."""
    return func.QueueMessage(id="1", body=body)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record logged inside the block, at any level (per example, unlike caplog)."""
    root = logging.getLogger()
    handler, level = _ListHandler(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_logs_are_bounded(records: list[logging.LogRecord], *secrets: str) -> None:
    """No record longer than 1,000 characters or carrying any of ``secrets``."""
    for record in records:
        text = record.getMessage()
        assert len(text) <= 1000, text[:200]
        for secret in secrets:
            assert secret not in text, text[:200]
