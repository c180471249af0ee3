"""Loads the learned model once per worker from a directory or a blob URL.

A blob location is the URL of the model *directory* (e.g. a container path with a read-only SAS
query string, kept in Key Vault): ``model.json`` and ``arrays.npz`` are fetched from it into a
private temporary directory, then loaded like a local model (integrity checked by TextModel).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

from domain.errors import ConfigError
from enrichers.learned import TextModel

__all__ = ["MODEL_FILES", "load_model"]

MODEL_FILES = ("model.json", "arrays.npz")
_TIMEOUT = (3.05, 60.0)


def load_model(location: str, *, session: requests.Session | None = None) -> TextModel:
    """Load a model from a local directory or an ``https://`` directory URL."""
    if location.startswith("https://"):
        return _load_remote(location, session or requests.Session())
    if location.startswith("http://"):
        raise ConfigError("model URL must use https")
    return TextModel.load(Path(location))


def _load_remote(url: str, session: requests.Session) -> TextModel:
    parts = urlsplit(url)
    target = Path(tempfile.mkdtemp(prefix="triage-model-"))
    for name in MODEL_FILES:
        file_url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + name))
        try:
            response = session.get(file_url, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise ConfigError(f"cannot download model file {name}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            # The URL may carry a SAS token: name the file and status, never the URL.
            raise ConfigError(f"cannot download model file {name}: HTTP {response.status_code}")
        (target / name).write_bytes(response.content)
    return TextModel.load(target)
