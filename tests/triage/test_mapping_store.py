"""Admin mappings from blob storage (https URL): loaded, versioned by ETag, errors without SAS."""

import pytest
import responses

from domain.errors import ConfigError
from domain.mapping import DEFAULT_MAPPING_PATH
from tests.triage.test_config_watch import Clock
from tests.triage.test_runtime import ENV
from triage.config_watch import MappingWatch
from triage.mapping_store import load_mapping_from
from triage.runtime import ServiceProvider, build_service

URL = "https://acct.blob.core.windows.net/config/mapping.yaml?sv=2024&sig=SECRETSIG%3D"
TEXT = DEFAULT_MAPPING_PATH.read_text(encoding="utf-8")


@responses.activate
def test_a_mapping_is_read_from_an_https_url():
    responses.get(URL, body=TEXT, headers={"ETag": '"v1"'})
    mapping = load_mapping_from(URL)
    assert mapping.system == "servicenow" and mapping.to_raw("category", "network") == "network"


@responses.activate
def test_a_remote_binding_may_name_a_built_in_taxonomy():
    binding = (
        "taxonomy: customer_service\nsystem: dataverse\ntable: incident\n"
        "fields: {title: title, description: description}\n"
    )
    responses.get(URL, body=binding)
    mapping = load_mapping_from(URL)
    assert mapping.system == "dataverse"
    assert mapping.taxonomy is not None


@responses.activate
@pytest.mark.parametrize(("status", "body"), [(403, "AuthenticationFailed"), (200, "fields: [")])
def test_errors_name_the_file_never_the_url_or_its_token(status, body):
    responses.get(URL, body=body, status=status)
    with pytest.raises(ConfigError) as caught:
        load_mapping_from(URL)
    assert "mapping.yaml" in str(caught.value)
    assert "SECRETSIG" not in str(caught.value) and "blob.core" not in str(caught.value)


def test_plain_http_is_refused():
    with pytest.raises(ConfigError, match="https"):
        load_mapping_from("http://example.invalid/mapping.yaml")


@responses.activate
def test_a_replaced_blob_rebuilds_the_service(monkeypatch):
    env = {**ENV, "ENRICH_MAPPING_PATH": URL}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    etag = {"v": '"v1"'}
    body = {"text": TEXT}
    responses.add_callback(
        responses.GET, URL, callback=lambda r: (200, {"ETag": etag["v"]}, body["text"])
    )
    responses.add_callback(responses.HEAD, URL, callback=lambda r: (200, {"ETag": etag["v"]}, ""))
    clock = Clock()
    provider = ServiceProvider(
        lambda: build_service(env), watch=MappingWatch(lambda: [URL], clock=clock)
    )
    first = provider.get()
    clock.t = 60
    assert provider.get() is first  # same ETag: nothing to do
    etag["v"], body["text"] = '"v2"', TEXT.replace("category: 0.85", "category: 0.97")
    clock.t = 120
    second = provider.get()
    assert second is not first and second.pipeline.mapping.threshold("category") == 0.97
