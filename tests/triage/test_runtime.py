import logging
from urllib.parse import quote_plus

import pytest

from connectors.dataverse import DataverseConnector
from connectors.queue import StorageJobQueue
from connectors.servicenow import ServiceNowConnector
from connectors.table_state import TableClaimStore, TableReplayGuard
from domain.errors import ConfigError
from domain.settings import Settings
from enrichers.summary import FallbackSummarizer
from triage.runtime import ServiceProvider, build_service, build_summarizer

ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "ENRICH_SERVICENOW__INSTANCE_URL": "https://dev1.service-now.invalid",
    "ENRICH_SERVICENOW__AUTH": "basic",
    "ENRICH_SERVICENOW__USERNAME": "svc",
    "ENRICH_SERVICENOW__PASSWORD": "pw",
    "ENRICH_WEBHOOK__SECRET": "s",
}


@pytest.fixture
def env(monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return dict(ENV)


def test_build_service_from_app_settings(env):
    service = build_service(env)
    assert isinstance(service.pipeline.connector, ServiceNowConnector)
    assert isinstance(service.requeue, StorageJobQueue)
    assert service.requeue.queue_name == "enrich-jobs"
    assert service.poison.queue_name == "enrich-jobs-poison"
    assert [e.name for e in service.pipeline.enrichers] == ["keywords", "priority", "summary"]
    # Claims and the replay guard are shared by every instance: Table Storage, not memory.
    assert isinstance(service.pipeline.claims, TableClaimStore)
    assert isinstance(service.replay, TableReplayGuard)


def test_build_service_scrubs_configured_secrets_from_every_log_record(env, monkeypatch):
    secret = "s3cr3t+/&=pw-0123456789"
    monkeypatch.setenv("ENRICH_SERVICENOW__PASSWORD", secret)
    root = logging.getLogger()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    root.addHandler(handler)
    before = list(root.filters)
    try:
        build_service(env)
        logging.getLogger("connectors.anything").warning(
            "echoed %s and %s", secret, quote_plus(secret)
        )
    finally:
        root.removeHandler(handler)
        root.filters[:] = before
    [record] = [r for r in records if r.name == "connectors.anything"]
    assert secret not in record.getMessage()
    assert quote_plus(secret) not in record.getMessage()


def test_bad_setting_fails_with_config_error_naming_it(env, monkeypatch):
    monkeypatch.setenv("ENRICH_SERVICENOW__AUTH", "oauth")  # without client id/secret
    with pytest.raises(ConfigError, match="ENRICH_SERVICENOW"):
        build_service(env)


def test_missing_mapping_file_fails_at_build(env, monkeypatch, tmp_path):
    monkeypatch.setenv("ENRICH_MAPPING_PATH", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        build_service(env)


def test_summarizer_is_azure_with_fallback_only_when_configured():
    assert build_summarizer(Settings()) is None
    cfg = {"endpoint": "https://x.openai.azure.com", "deployment": "gpt", "api_key": "k"}
    assert isinstance(build_summarizer(Settings(azure_openai=cfg)), FallbackSummarizer)


def test_provider_builds_once_and_can_be_overridden():
    calls = []

    def factory():
        calls.append(1)
        return object()

    provider = ServiceProvider(factory)  # type: ignore[arg-type]
    first = provider.get()
    assert provider.get() is first
    assert len(calls) == 1
    provider.override(None)
    assert provider.get() is not first


DATAVERSE = {
    "ENRICH_DATAVERSE__ORG_URL": "https://contoso.crm4.dynamics.com",
    "ENRICH_DATAVERSE__TENANT_ID": "contoso.onmicrosoft.com",
    "ENRICH_DATAVERSE__CLIENT_ID": "11111111-2222-4333-8444-555555555555",
    "ENRICH_DATAVERSE__CLIENT_SECRET": "dv-secret-0123456789",
    "ENRICH_DATAVERSE_WEBHOOK__KEYS": '["new-key-0123456789abcdef", "old-key-0123456789abcdef"]',
}


def test_both_platforms_share_one_service_and_one_claim_store(env, monkeypatch):
    for key, value in DATAVERSE.items():
        monkeypatch.setenv(key, value)
    service = build_service(env)
    dataverse = service.pipeline_for("dataverse")
    assert isinstance(service.pipeline.connector, ServiceNowConnector)
    assert dataverse is not None and isinstance(dataverse.connector, DataverseConnector)
    assert dataverse.mapping.system == "dataverse"
    assert dataverse.claims is service.pipeline.claims
    assert service.dataverse_keys is not None and len(service.dataverse_keys.keys) == 2


def _without_servicenow(monkeypatch):
    for key in [k for k in ENV if k.startswith("ENRICH_SERVICENOW")]:
        monkeypatch.delenv(key)


def test_dynamics_alone_is_a_complete_app(env, monkeypatch):
    _without_servicenow(monkeypatch)
    for key, value in DATAVERSE.items():
        monkeypatch.setenv(key, value)
    service = build_service({k: v for k, v in env.items() if "SERVICENOW" not in k})
    assert service.pipeline.mapping.system == "dataverse"
    assert service.pipeline_for("servicenow") is None


def test_no_platform_configured_names_both_settings(env, monkeypatch):
    _without_servicenow(monkeypatch)
    with pytest.raises(
        ConfigError, match=r"ENRICH_SERVICENOW__INSTANCE_URL.*ENRICH_DATAVERSE__ORG_URL"
    ):
        build_service(env)


def test_shadow_mode_records_to_table_storage_in_every_pipeline(env, monkeypatch):
    from connectors.shadow import TableShadowStore

    monkeypatch.setenv("ENRICH_SHADOW_MODE", "true")
    service = build_service(env)
    assert isinstance(service.pipeline.shadow, TableShadowStore)
    assert service.pipeline.decision_log is None  # shadow mode writes nothing to log
    monkeypatch.setenv("ENRICH_SHADOW_MODE", "false")
    live = build_service(env)
    assert live.pipeline.shadow is None
    assert isinstance(live.pipeline.decision_log, TableShadowStore)
    monkeypatch.setenv("ENRICH_DECISION_LOG", "false")
    assert build_service(env).pipeline.decision_log is None
