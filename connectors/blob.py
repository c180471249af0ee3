"""Reading one small configuration file (an admin mapping) from an https URL, e.g. a blob with
a read-only SAS token kept in Key Vault. Errors name the file and the status, never the URL:
its query string is a credential."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from domain.errors import ConfigError

__all__ = ["MAX_CONFIG_BYTES", "RemoteText", "fetch_text", "remote_name", "remote_version"]

MAX_CONFIG_BYTES = 2 * 1024 * 1024
_TIMEOUT = (3.05, 20.0)


@dataclass(frozen=True)
class RemoteText:
    """A fetched file: its text and the version the server gave it (ETag, else Last-Modified)."""

    text: str
    version: str


def remote_name(url: str) -> str:
    """The file's name for messages: the URL's path without scheme, host or query."""
    return urlsplit(url).path.rsplit("/", 1)[-1] or "(remote file)"


def _check(url: str) -> None:
    if not url.startswith("https://"):
        raise ConfigError("a remote mapping must be an https:// URL")


def fetch_text(url: str, *, session: requests.Session | None = None) -> RemoteText:
    """GET the file; ``ConfigError`` naming the file when it cannot be read."""
    _check(url)
    name = remote_name(url)
    http = session or requests.Session()
    try:
        response = http.get(url, timeout=_TIMEOUT)
    except requests.RequestException as exc:
        raise ConfigError(f"cannot read {name}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise ConfigError(f"cannot read {name}: HTTP {response.status_code}")
    if len(response.content) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = response.content.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text") from None
    return RemoteText(text, _version(response))


def remote_version(url: str, *, session: requests.Session | None = None) -> str:
    """The file's current version (a HEAD request): changes when the file is replaced."""
    _check(url)
    http = session or requests.Session()
    try:
        response = http.head(url, timeout=_TIMEOUT)
    except requests.RequestException as exc:
        return f"unreachable:{type(exc).__name__}"
    if response.status_code != 200:
        return f"http:{response.status_code}"
    return _version(response)


def _version(response: requests.Response) -> str:
    return response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
