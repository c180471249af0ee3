"""Pytest plugin: one in-memory Azurite Storage emulator per test session.

Register with ``pytest_plugins = ["tests.azurite"]``. Azurite comes from npm
(``npm ci --no-audit --no-fund`` installs the version pinned in package-lock.json). Without it the
``azurite`` fixture skips, or fails when ``CI`` is set so CI never passes by skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DEV_ACCOUNT_KEY", "DEV_ACCOUNT_NAME", "Azurite", "azurite", "queue_name"]

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
MISSING_MESSAGE = (
    "Azurite is not installed (node_modules/.bin/azurite missing): run `make test`, which "
    "installs Azurite via npm ci (or run `npm ci --no-audit --no-fund` yourself)"
)

# The emulator's well-known account; the key is public (Microsoft's Azurite docs).
DEV_ACCOUNT_NAME = "devstoreaccount1"
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

# --disableTelemetry: otherwise Azurite reports to an outside host. --inMemoryPersistence: no
# files, nothing left between runs. Port 0 lets the OS pick free ports without a
# pick-then-bind race; Azurite prints the ports it got.
AZURITE_ARGS = (
    "--silent",
    "--inMemoryPersistence",
    "--extentMemoryLimit",
    "256",
    "--skipApiVersionCheck",
    "--disableTelemetry",
    "--loose",
    *("--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST),
    *("--blobPort", "0", "--queuePort", "0", "--tablePort", "0"),
)
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)"
)


@dataclass(frozen=True)
class Azurite:
    """A running emulator: its ports and the connection string that reaches it."""

    blob_port: int
    queue_port: int
    table_port: int
    host: str = HOST

    def endpoint(self, port: int) -> str:
        """Path-style endpoint for the dev account on ``port``."""
        return f"http://{self.host}:{port}/{DEV_ACCOUNT_NAME}"

    @property
    def queue_endpoint(self) -> str:
        """The queue service endpoint."""
        return self.endpoint(self.queue_port)

    @property
    def connection_string(self) -> str:
        """A full connection string for the dev account on this emulator's ports."""
        return connection_string(
            self.endpoint(self.blob_port),
            self.queue_endpoint,
            self.endpoint(self.table_port),
        )

    def queue_client(self, name: str, *, base64: bool = True, **kwargs: Any) -> Any:
        """A test-side QueueClient; ``base64=False`` shows messages exactly as stored."""
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy

        if base64:
            kwargs.setdefault("message_decode_policy", TextBase64DecodePolicy())
        return QueueClient.from_connection_string(self.connection_string, name, **kwargs)


def connection_string(blob: str, queue: str, table: str, key: str = DEV_ACCOUNT_KEY) -> str:
    """A dev-account connection string with explicit endpoints."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT_NAME};AccountKey={key};"
        f"BlobEndpoint={blob};QueueEndpoint={queue};TableEndpoint={table};"
    )


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _read_ports(log_path: Path) -> dict[str, int]:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return {service: int(port) for service, port in _LISTENING.findall(text)}


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path) -> Azurite:
    """Wait (bounded) until all three services listen and the queue port accepts connections."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Azurite exited with {proc.returncode}")
        ports = _read_ports(log_path)
        if len(ports) == 3 and _accepts(ports["Queue"]):
            return Azurite(ports["Blob"], ports["Queue"], ports["Table"])
        time.sleep(0.05)  # polling a child's startup, not pacing a test
    raise RuntimeError(f"Azurite did not start within {START_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # AZURITE_ACCOUNTS would replace the well-known account the connection string uses.
    env.pop("AZURITE_ACCOUNTS", None)
    return env


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Start Azurite on free loopback ports for the session; stop it afterwards."""
    if not AZURITE_BIN.exists():
        _missing(MISSING_MESSAGE)
    if shutil.which("node") is None:
        _missing("Azurite needs `node` on PATH (Node.js 20)")
    workdir = tmp_path_factory.mktemp("azurite")
    log_path = workdir / "azurite.log"
    # Output goes to a file, not a pipe: no pipe to drain or leave open, and the log survives
    # for the failure message.
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(AZURITE_BIN), *AZURITE_ARGS],
            cwd=workdir,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            server = _wait_ready(proc, log_path)
        except RuntimeError as exc:
            log_tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            pytest.fail(f"{exc}; its output:\n{log_tail}", pytrace=False)
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    """A queue name unique to this test, valid for Storage (3-63 chars, a-z 0-9 and single -)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"{stem or 'q'}-{uuid.uuid4().hex[:12]}"
