"""Loading the model from a directory or an https directory URL (blob container + SAS)."""

import pytest
import requests
import responses

from domain.errors import ConfigError
from tests.learn import make_tickets
from triage.learn.train import train_model
from triage.model_store import load_model

BASE = "https://acct.blob.core.windows.net/models/desk-a/2026-11-24"
SAS = "sv=2025-01-05&sp=r&sig=SECRETSIG"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rows = make_tickets(240, seed=7, vague=0.0)
    model = train_model(
        [f"{r['title']}\n{r['body']}" for r in rows], {"category": [r["category"] for r in rows]}
    )
    return model.save(tmp_path_factory.mktemp("model"))


TEXTS = ["hej vpn tunnel forbindelse", "drucker toner papir bitte"]


def test_local_directory(model_dir):
    model = load_model(str(model_dir))
    assert model.fields == ["category"]


@responses.activate
def test_https_directory_url_with_sas_downloads_both_files(model_dir):
    for name in ("model.json", "arrays.npz"):
        responses.get(
            f"{BASE}/{name}",
            body=(model_dir / name).read_bytes(),
            match=[responses.matchers.query_string_matcher(SAS)],
        )
    remote = load_model(f"{BASE}?{SAS}", session=requests.Session())
    local = load_model(str(model_dir))
    assert remote.predict(TEXTS) == local.predict(TEXTS)


@responses.activate
def test_download_failure_names_the_file_not_the_sas(model_dir):
    responses.get(f"{BASE}/model.json", status=403)
    with pytest.raises(ConfigError, match=r"model\.json: HTTP 403") as info:
        load_model(f"{BASE}?{SAS}", session=requests.Session())
    assert "SECRETSIG" not in str(info.value)


@responses.activate
def test_tampered_remote_arrays_are_refused(model_dir):
    responses.get(f"{BASE}/model.json", body=(model_dir / "model.json").read_bytes())
    data = bytearray((model_dir / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    responses.get(f"{BASE}/arrays.npz", body=bytes(data))
    with pytest.raises(ConfigError):
        load_model(BASE, session=requests.Session())


def test_plain_http_is_refused():
    with pytest.raises(ConfigError, match="https"):
        load_model("http://example.invalid/model")
