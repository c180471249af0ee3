"""Settings errors name the setting and the problem, never a value: no secret reaches a log."""

from __future__ import annotations

import traceback

import pytest
from pydantic import ValidationError

from domain.errors import ConfigError
from domain.settings import ServiceNowSettings, Settings, load_settings

# 24 characters, each 4+-character window unique enough to spot in any leak.
LONG = "Zq7+Lp/Wd&Xe=Mv%Rk9Tn#Hs"
SHORT = "pW4+x="
INSTANCE = "https://acme.service-now.com"


def _windows(secret: str, size: int = 4) -> list[str]:
    """Every substring of ``secret`` of at least ``size`` characters."""
    return [secret[i:j] for i in range(len(secret)) for j in range(i + size, len(secret) + 1)]


def _all_text(exc: BaseException) -> str:
    """What could reach a log: str, repr and the full formatted traceback with its chain."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.fixture
def clean_env(monkeypatch):
    """No ENRICH_* variable from the outer environment leaks into a case."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("ENRICH_"):
            monkeypatch.delenv(name)
    return monkeypatch


CASES = {
    "basic without username": {
        "ENRICH_SERVICENOW__INSTANCE_URL": INSTANCE,
        "ENRICH_SERVICENOW__AUTH": "basic",
        "ENRICH_SERVICENOW__PASSWORD": LONG,
    },
    "oauth without client_id": {
        "ENRICH_SERVICENOW__INSTANCE_URL": INSTANCE,
        "ENRICH_SERVICENOW__AUTH": "oauth",
        "ENRICH_SERVICENOW__CLIENT_SECRET": LONG,
    },
    "bad page size next to a password": {
        "ENRICH_SERVICENOW__INSTANCE_URL": INSTANCE,
        "ENRICH_SERVICENOW__AUTH": "basic",
        "ENRICH_SERVICENOW__USERNAME": "svc",
        "ENRICH_SERVICENOW__PASSWORD": LONG,
        "ENRICH_SERVICENOW__PAGE_SIZE": "0",
    },
    "bad webhook tolerance next to its secret": {
        "ENRICH_WEBHOOK__SECRET": LONG,
        "ENRICH_WEBHOOK__TOLERANCE_S": "0",
    },
    "azure openai without deployment": {
        "ENRICH_AZURE_OPENAI__ENDPOINT": "https://x.openai.azure.com",
        "ENRICH_AZURE_OPENAI__API_KEY": LONG,
    },
    "azure openai with a bad endpoint": {
        "ENRICH_AZURE_OPENAI__ENDPOINT": "not a url",
        "ENRICH_AZURE_OPENAI__DEPLOYMENT": "gpt",
        "ENRICH_AZURE_OPENAI__API_KEY": LONG,
    },
    "webhook block as JSON with a bad tolerance": {
        "ENRICH_WEBHOOK": f'{{"secret": "{LONG}", "tolerance_s": 0}}',
    },
    "webhook block that is not valid JSON": {
        "ENRICH_WEBHOOK": f'{{"secret": "{LONG}", ',
    },
}


@pytest.mark.parametrize("env", CASES.values(), ids=CASES.keys())
def test_config_error_holds_no_part_of_a_24_char_secret(clean_env, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = _all_text(info.value)
    leaked = [w for w in _windows(LONG) if w in text]
    assert leaked == [], f"secret fragments in the error: {leaked[:5]}"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_a_short_password_is_not_shown_in_full(clean_env):
    clean_env.setenv("ENRICH_SERVICENOW__INSTANCE_URL", INSTANCE)
    clean_env.setenv("ENRICH_SERVICENOW__AUTH", "basic")
    clean_env.setenv("ENRICH_SERVICENOW__PASSWORD", SHORT)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = _all_text(info.value)
    assert SHORT not in text
    assert "pW4+" not in text


@pytest.mark.parametrize(
    ("env", "names"),
    [
        (CASES["basic without username"], ["ENRICH_SERVICENOW", "needs username and password"]),
        (CASES["oauth without client_id"], ["ENRICH_SERVICENOW", "client_id and client_secret"]),
        (CASES["bad webhook tolerance next to its secret"], ["ENRICH_WEBHOOK__TOLERANCE_S"]),
        (CASES["bad page size next to a password"], ["ENRICH_SERVICENOW__PAGE_SIZE"]),
        (CASES["azure openai without deployment"], ["ENRICH_AZURE_OPENAI__DEPLOYMENT"]),
        (CASES["webhook block that is not valid JSON"], ["ENRICH_WEBHOOK", "not valid JSON"]),
    ],
)
def test_the_message_still_names_the_setting_and_the_problem(clean_env, env, names):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    for name in names:
        assert name in str(info.value)


def test_models_built_directly_hide_their_input_too():
    """Tests and tools that build settings by hand get pydantic errors without input values."""
    with pytest.raises(ValidationError) as info:
        ServiceNowSettings(instance_url=INSTANCE, auth="basic", password=LONG)
    assert not [w for w in _windows(LONG) if w in _all_text(info.value)]
    with pytest.raises(ValidationError) as info:
        Settings(webhook={"secret": LONG, "tolerance_s": 0})
    assert not [w for w in _windows(LONG) if w in _all_text(info.value)]


def test_valid_settings_still_load(clean_env):
    clean_env.setenv("ENRICH_SERVICENOW__INSTANCE_URL", INSTANCE)
    clean_env.setenv("ENRICH_SERVICENOW__AUTH", "basic")
    clean_env.setenv("ENRICH_SERVICENOW__USERNAME", "svc")
    clean_env.setenv("ENRICH_SERVICENOW__PASSWORD", LONG)
    settings = load_settings()
    assert settings.servicenow is not None
    assert settings.servicenow.password is not None
    assert settings.servicenow.password.get_secret_value() == LONG
    assert LONG not in repr(settings)
