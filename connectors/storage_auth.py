"""How the app reaches its Storage account: a connection string, or an identity.

One app setting prefix (``AzureWebJobsStorage`` unless ``ENRICH_QUEUE__CONNECTION_SETTING``
names another) describes the connection, read by the rules the Functions host documents for
identity-based connections ("Connecting to host storage with an identity", and the
``AzureWebJobsStorage__*`` entries of the app settings reference):

1. **Connection string** — the setting itself is set (an exact match wins over the prefixed
   settings). ``UseDevelopmentStorage=true`` means Azurite on its default ports.
2. **Identity** — otherwise, the endpoint of each service comes from
   ``<setting>__queueServiceUri`` / ``__tableServiceUri`` / ``__blobServiceUri``; else
   ``<setting>__serviceUri`` (the one-service alias; for ``AzureWebJobsStorage`` it is the blob
   service, so it never stands in for queues or tables there); else, for ``AzureWebJobsStorage``
   only, ``__accountName`` → ``https://<name>.<service>.core.windows.net`` (global Azure).
   The credential: ``__credential=managedidentity`` → ``ManagedIdentityCredential`` with
   ``__clientId`` (a user-assigned identity) or ``__managedIdentityResourceId`` (not both;
   neither: the system-assigned identity). Without ``__credential`` (local development):
   ``ClientSecretCredential`` when ``__tenantId``, ``__clientId`` and ``__clientSecret`` are all
   set, else ``DefaultAzureCredential`` (the developer's Azure CLI / VS Code sign-in).

``azure.identity`` is imported only when a credential is first built, so an app on a
connection string (and every cold start) pays nothing for it. One credential per connection
shape is shared by every client of the process, so its token cache is shared too.

Errors are ``ConfigError`` naming the setting, never its value (a connection string holds a key).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from domain.errors import ConfigError

__all__ = [
    "DEV_STORAGE_CONNECTION_STRING",
    "HOST_STORAGE",
    "CredentialFactory",
    "CredentialSpec",
    "Service",
    "StorageConnection",
    "default_credential_factory",
    "queue_client",
    "resolve_connection",
    "resolve_connection_string",
    "table_client",
]

Service = Literal["queue", "table", "blob"]
CredentialKind = Literal["managed_identity", "client_secret", "default"]

#: The host's own storage connection; the only one where ``__accountName`` is documented.
HOST_STORAGE = "AzureWebJobsStorage"

# The well-known Azurite/emulator account: the key is public, documented by Microsoft.
DEV_STORAGE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)

_ACCOUNT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")


@dataclass(frozen=True)
class CredentialSpec:
    """Which token credential an identity-based connection uses (no secret in its repr)."""

    kind: CredentialKind
    client_id: str | None = None
    resource_id: str | None = None
    tenant_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)


#: Builds the credential for a spec; tests pass a recorder instead of azure.identity.
CredentialFactory = Callable[[CredentialSpec], Any]


@dataclass(frozen=True)
class StorageConnection:
    """A resolved connection: a connection string, or service endpoints plus a credential."""

    setting: str
    connection_string: str | None = field(default=None, repr=False)
    endpoints: Mapping[Service, str] = field(default_factory=dict)
    credential: CredentialSpec | None = None

    @property
    def identity_based(self) -> bool:
        """True when the app authenticates with a token instead of a connection string."""
        return self.connection_string is None

    def endpoint(self, service: Service) -> str:
        """The HTTPS endpoint of ``service``; ConfigError naming the missing setting."""
        try:
            return self.endpoints[service]
        except KeyError:
            names = f"{self.setting}__{service}ServiceUri"
            if self.setting == HOST_STORAGE:
                names += f" or {self.setting}__accountName"
            raise ConfigError(
                f"{self.setting} is an identity-based connection without a {service} "
                f"endpoint: set {names}"
            ) from None


def resolve_connection(env: Mapping[str, str], setting: str) -> StorageConnection:
    """Read the connection that the app setting (prefix) ``setting`` describes."""
    value = env.get(setting, "").strip()
    if value:
        return StorageConnection(setting, connection_string=_connection_string(value, setting))
    prefix = f"{setting}__"
    props = {k[len(prefix) :].lower(): v.strip() for k, v in env.items() if k.startswith(prefix)}
    props = {k: v for k, v in props.items() if v}
    if not props:
        raise ConfigError(
            f"app setting {setting} is missing or empty (and no {setting}__* identity-based "
            "connection is set)"
        )
    endpoints = {
        service: _https_uri(uri, f"{setting}__{name}")
        for service, name, uri in _service_uris(props, setting)
    }
    if not endpoints:
        hint = f"{setting}__queueServiceUri and {setting}__tableServiceUri"
        if setting == HOST_STORAGE:
            hint += f", or {setting}__accountName"
        raise ConfigError(
            f"{setting} is an identity-based connection without endpoints: set {hint}"
        )
    return StorageConnection(setting, endpoints=endpoints, credential=_credential(props, setting))


def resolve_connection_string(env: Mapping[str, str], setting: str) -> str:
    """The connection string an app setting holds; ConfigError for an identity-based one."""
    connection = resolve_connection(env, setting)
    if connection.connection_string is None:
        raise ConfigError(
            f"{setting} is an identity-based connection ({setting}__*), not a connection string"
        )
    return connection.connection_string


def _connection_string(value: str, setting: str) -> str:
    if value.rstrip(";").replace(" ", "").lower() == "usedevelopmentstorage=true":
        return DEV_STORAGE_CONNECTION_STRING
    if value.lower().startswith("usedevelopmentstorage"):
        raise ConfigError(
            f"{setting}: only 'UseDevelopmentStorage=true' is supported "
            "(no DevelopmentStorageProxyUri)"
        )
    if "=" not in value:
        # Never echo the value: it may be a key.
        raise ConfigError(f"{setting} is not a Storage connection string")
    return value


def _service_uris(props: Mapping[str, str], setting: str) -> list[tuple[Service, str, str]]:
    services: tuple[Service, ...] = ("queue", "table", "blob")
    found: list[tuple[Service, str, str]] = []
    account = props.get("accountname")
    if account is not None and setting != HOST_STORAGE:
        raise ConfigError(
            f"{setting}__accountName is only valid for {HOST_STORAGE}: set "
            f"{setting}__queueServiceUri and {setting}__tableServiceUri instead"
        )
    if account is not None and not (
        3 <= len(account) <= 24 and set(account) <= _ACCOUNT_NAME_CHARS
    ):
        raise ConfigError(
            f"{setting}__accountName is not a storage account name "
            "(3 to 24 lowercase letters and digits)"
        )
    alias = props.get("serviceuri")
    for service in services:
        name = f"{service}ServiceUri"
        if uri := props.get(name.lower()):
            found.append((service, name, uri))
        elif alias and (service == "blob" or setting != HOST_STORAGE):
            # serviceUri: the blob service for the host's storage, else the one service's alias.
            found.append((service, "serviceUri", alias))
        elif account:
            found.append((service, "accountName", f"https://{account}.{service}.core.windows.net"))
    return found


def _https_uri(uri: str, name: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an https:// service URI without a query")
    return uri.rstrip("/")


def _credential(props: Mapping[str, str], setting: str) -> CredentialSpec:
    kind = props.get("credential")
    client_id, resource_id = props.get("clientid"), props.get("managedidentityresourceid")
    if kind is not None:
        if kind.lower() != "managedidentity":
            raise ConfigError(f"{setting}__credential must be 'managedidentity' (or unset)")
        if client_id and resource_id:
            raise ConfigError(
                f"set {setting}__clientId or {setting}__managedIdentityResourceId, not both"
            )
        return CredentialSpec("managed_identity", client_id=client_id, resource_id=resource_id)
    tenant_id, secret = props.get("tenantid"), props.get("clientsecret")
    if tenant_id or secret:
        missing = [
            f"{setting}__{name}"
            for name, value in (("tenantId", tenant_id), ("clientId", client_id))
            if not value
        ] + ([f"{setting}__clientSecret"] if not secret else [])
        if missing:
            raise ConfigError(f"a service principal connection also needs {', '.join(missing)}")
        return CredentialSpec(
            "client_secret", client_id=client_id, tenant_id=tenant_id, client_secret=secret
        )
    return CredentialSpec("default")


_CREDENTIALS: dict[CredentialSpec, Any] = {}
_CREDENTIALS_LOCK = threading.Lock()


def default_credential_factory(spec: CredentialSpec) -> Any:
    """The azure.identity credential for ``spec``, one per spec per process (shared cache)."""
    with _CREDENTIALS_LOCK:
        credential = _CREDENTIALS.get(spec)
        if credential is None:
            credential = _build_credential(spec)
            _CREDENTIALS[spec] = credential
        return credential


def _build_credential(spec: CredentialSpec) -> Any:
    try:
        import azure.identity as identity  # lazy: only identity-based connections need it
    except ImportError:  # pragma: no cover - a deployment without requirements.txt
        raise ConfigError(
            "an identity-based Storage connection needs the azure-identity package"
        ) from None
    if spec.kind == "managed_identity":
        if spec.resource_id:
            return identity.ManagedIdentityCredential(
                identity_config={"resource_id": spec.resource_id}
            )
        return identity.ManagedIdentityCredential(client_id=spec.client_id)
    if spec.kind == "client_secret":
        if not (spec.tenant_id and spec.client_id and spec.client_secret):
            raise ConfigError(
                "a service principal connection needs tenantId, clientId, clientSecret"
            )
        return identity.ClientSecretCredential(spec.tenant_id, spec.client_id, spec.client_secret)
    return identity.DefaultAzureCredential()


def table_client(
    connection: StorageConnection,
    table_name: str,
    *,
    credential_factory: CredentialFactory = default_credential_factory,
    **kwargs: Any,
) -> Any:
    """An ``azure.data.tables.TableClient`` for ``table_name`` on ``connection``."""
    from azure.data.tables import TableClient

    if connection.connection_string is not None:
        return TableClient.from_connection_string(
            connection.connection_string, table_name, **kwargs
        )
    assert connection.credential is not None
    return TableClient(
        connection.endpoint("table"),
        table_name,
        credential=credential_factory(connection.credential),
        **kwargs,
    )


def queue_client(
    connection: StorageConnection,
    queue_name: str,
    *,
    credential_factory: CredentialFactory = default_credential_factory,
    **kwargs: Any,
) -> Any:
    """An ``azure.storage.queue.QueueClient`` for ``queue_name`` on ``connection``."""
    from azure.storage.queue import QueueClient

    if connection.connection_string is not None:
        return QueueClient.from_connection_string(
            connection.connection_string, queue_name, **kwargs
        )
    assert connection.credential is not None
    return QueueClient(
        connection.endpoint("queue"),
        queue_name,
        credential=credential_factory(connection.credential),
        **kwargs,
    )
