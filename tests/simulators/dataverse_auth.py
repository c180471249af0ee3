"""TLS and the Entra ID token endpoint of the Dataverse simulator (dataverse.md §8).

``make_certificate`` writes a throw-away self-signed certificate for 127.0.0.1/localhost.
``TokenService`` answers msal's OIDC discovery and client-credentials token requests: each
client (id -> secret) acts as an application user (a systemuserid GUID); tokens are JWT-shaped
(unsigned claims, random signature) and expire after a TTL on the simulator's clock. Errors
follow Entra's shape: ``{"error", "error_description": "AADSTS...", "error_codes", ...}``.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.simulators import Clock, Request, Response

__all__ = ["AppClient", "TokenService", "make_certificate", "server_context"]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (self-signed, 127.0.0.1 and localhost, 1 day)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dataverse-simulator")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS server context for the certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


@dataclass(frozen=True)
class AppClient:
    """An app registration and the application user it acts as in the environment.

    ``secret`` is a client secret, or a PEM certificate (``-----BEGIN CERTIFICATE-----``):
    then the client authenticates with an msal ``client_assertion`` signed by its key.
    """

    client_id: str
    secret: str
    user_id: str

    @property
    def certificate(self) -> x509.Certificate | None:
        """The registered certificate, if the credential is one."""
        if not self.secret.startswith("-----BEGIN CERTIFICATE-----"):
            return None
        return x509.load_pem_x509_certificate(self.secret.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """OIDC discovery and the v2.0 token endpoint for one tenant and one resource (org URL)."""

    def __init__(
        self, tenant: str, resource: str, clients: list[AppClient], clock: Clock, ttl_s: int
    ) -> None:
        self.tenant = tenant
        self.resource = resource.rstrip("/")  # https://contoso.crm.dynamics.com
        self.clients = {c.client_id: c for c in clients}
        self.clock = clock
        self.token_ttl_s = ttl_s
        self.issued = 0
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (user id, expires at)

    def discovery(self, base_url: str) -> Response:
        """The OpenID configuration msal reads before asking for a token."""
        root = f"{base_url}/{self.tenant}"
        return Response(
            200,
            {
                "issuer": f"{base_url}/{self.tenant}/v2.0",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post", "private_key_jwt", "client_secret_basic",
                ],
                "tenant_region_scope": "EU",
            },
        )  # fmt: skip

    def issue(self, req: Request, base_url: str) -> Response:
        """Answer ``POST /{tenant}/oauth2/v2.0/token`` (client credentials only)."""
        form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
        grant = form.get("grant_type", "")
        if grant != "client_credentials":
            return _aad(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client = self.clients.get(form.get("client_id", ""))
        if client is None:
            return _aad(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{form.get('client_id', '')[:64]}' was not found "
                "in the directory.",
            )  # fmt: skip
        cert = client.certificate
        if cert is not None:
            endpoint = f"{base_url}/{self.tenant}/oauth2/v2.0/token"
            assertion = form.get("client_assertion", "")
            if not _assertion_ok(assertion, cert, client.client_id, endpoint):
                return _aad(
                    401, "invalid_client", 700027, "Client assertion failed signature validation."
                )
        elif not secrets.compare_digest(form.get("client_secret", ""), client.secret):
            return _aad(401, "invalid_client", 7000215, "Invalid client secret provided.")
        scope = form.get("scope", "")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return _aad(
                400, "invalid_scope", 1002012,
                "The provided value for scope is not valid. Client credential flows must have a "
                "scope value with /.default suffixed to the resource identifier.",
            )  # fmt: skip
        if scopes[0].removesuffix("/.default").rstrip("/").lower() != self.resource.lower():
            return _aad(
                400, "invalid_resource", 500011,
                f"The resource principal named {scopes[0][:200]} was not found in the tenant.",
            )  # fmt: skip
        return Response(200, self._token(client))

    def _token(self, client: AppClient) -> dict[str, object]:
        now = self.clock.now()
        claims = {
            "aud": self.resource, "appid": client.client_id, "oid": client.user_id,
            "tid": self.tenant, "iat": int(now), "exp": int(now + self.token_ttl_s),
            "jti": uuid.uuid4().hex,
        }  # fmt: skip
        header = _b64(json.dumps({"typ": "JWT", "alg": "RS256"}).encode())
        token = f"{header}.{_b64(json.dumps(claims).encode())}.{_b64(secrets.token_bytes(32))}"
        with self._lock:
            self._tokens[token] = (client.user_id, now + self.token_ttl_s)
            self.issued += 1
        ttl = self.token_ttl_s
        return {
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        }

    def authenticate(self, authorization: str) -> str | None:
        """The user id of a valid, unexpired bearer token, else None."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._lock:
            entry = self._tokens.get(token.strip())
        if entry is None or entry[1] <= self.clock.now():
            return None
        return entry[0]

    def expire_all(self) -> None:
        """Invalidate every issued token."""
        with self._lock:
            self._tokens.clear()


def _assertion_ok(assertion: str, cert: x509.Certificate, client_id: str, endpoint: str) -> bool:
    """An msal client assertion: RS256 (x5t = SHA-1) or PS256 (x5t#S256) by the certificate's
    key, audience the token endpoint, issuer and subject the client, not expired."""
    try:
        header = jwt.get_unverified_header(assertion)
        claims = jwt.decode(
            assertion, cert.public_key(), algorithms=["RS256", "PS256"], audience=endpoint,  # type: ignore[arg-type]
            issuer=client_id, options={"require": ["exp", "aud", "iss", "sub"]},
        )  # fmt: skip
    except jwt.PyJWTError:
        return False
    thumbs = {
        "x5t": _b64(cert.fingerprint(hashes.SHA1())),  # noqa: S303 - the x5t header is SHA-1
        "x5t#S256": _b64(cert.fingerprint(hashes.SHA256())),
    }
    matches = any(str(header.get(k, "")).rstrip("=") == v for k, v in thumbs.items())
    return matches and claims.get("sub") == client_id


def _aad(status: int, error: str, code: int, text: str) -> Response:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Response(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace} "
            f"Correlation ID: {corr} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )
