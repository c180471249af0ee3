"""Helpers for the Dataverse simulator's tests: an msal-authenticated session and a receiver.

Note: ``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify`` when
``trust_env`` is on, so sessions that trust the simulator's certificate turn it off.
"""

from __future__ import annotations

import threading
from typing import Any

import msal  # type: ignore[import-untyped]
import requests

from tests.simulators import LoopbackServer, Request, Response
from tests.simulators.dataverse import DataverseSimulator

__all__ = ["CLIENT", "SECRET", "Receiver", "api_session", "tls_session"]

CLIENT, SECRET = "app-client", "app-secret"
ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


def tls_session(sim: DataverseSimulator) -> requests.Session:
    """A session trusting the simulator's certificate (and nothing from the environment)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = sim.ca_path if sim.ca_path else True
    return session


def api_session(
    sim: DataverseSimulator, client: str = CLIENT, secret: str = SECRET
) -> requests.Session:
    """A session with a bearer token obtained by msal from the simulator's token endpoint."""
    session = tls_session(sim)
    app = msal.ConfidentialClientApplication(
        client,
        authority=sim.authority,
        client_credential=secret,
        http_client=session,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client([sim.scope])
    assert "access_token" in result, result
    session.headers.update(ODATA)
    session.headers["Authorization"] = f"Bearer {result['access_token']}"
    return session


class Receiver(LoopbackServer):
    """A webhook endpoint on loopback: records each POST, answers the queued statuses (200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.received: list[Request] = []
        self._lock = threading.Lock()

    def handle(self, req: Request) -> Response:
        """Record the request; answer the next queued status, else 200."""
        with self._lock:
            self.received.append(req)
            status = self.statuses.pop(0) if self.statuses else 200
        return Response(status, {"ok": status < 400})

    def bodies(self) -> list[Any]:
        """Raw bodies received so far."""
        with self._lock:
            return [r.body for r in self.received]


def simulator_connector(
    sim: DataverseSimulator,
    client: str,
    secret: str,
    field_types: dict[str, str],
    *,
    session: requests.Session | None = None,
    **settings: Any,
) -> tuple[Any, Any]:
    """(DataverseConnector, DataverseSettings) for ``sim`` over its TLS, msal from its token
    endpoint, the simulator's FakeClock for sleeps and timing. The environment is taken to live
    at the simulator's loopback URL (the token audience is set to it)."""
    from connectors._msal import MsalTokenProvider
    from connectors.dataverse import DataverseConnector
    from domain.settings import DataverseSettings, HttpSettings

    sim.tokens.resource = sim.url
    session = session if session is not None else tls_session(sim)
    dataverse = DataverseSettings(
        org_url=sim.url,
        tenant_id=sim.tenant,
        client_id=client,
        client_secret=secret,
        authority_host=sim.url,
        **settings,
    )
    clock = sim.clock
    connector = DataverseConnector(
        dataverse,
        HttpSettings(read_timeout_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0),
        field_types=field_types,
        token_provider=MsalTokenProvider(dataverse, http_client=session, validate_authority=False),
        session=session,
        sleep=getattr(clock, "advance", lambda s: None),
        now=clock.now,
        monotonic=clock.now,
    )
    return connector, dataverse
