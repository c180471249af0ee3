"""Authentication and inbound rate limiting of the ServiceNow simulator (servicenow.md §6, §8).

Basic auth against a user table, OAuth client credentials (``/oauth_token.do``) with expiring
bearer tokens acting as the client's application user, and per-user hourly rate limit rules.
"""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from tests.simulators import Clock, Request, Response

__all__ = ["InstanceAuth", "RateLimitMode", "RateLimitRule"]

RateLimitMode = Literal["retry_after", "reset_only", "none"]


@dataclass(frozen=True)
class RateLimitRule:
    """A per-hour inbound REST rate limit rule; None filters match everything."""

    limit: int
    mode: RateLimitMode = "retry_after"
    method: str | None = None
    table: str | None = None
    user: str | None = None
    rule_id: str = "7f3c1e52db4a4a10b1c2d3e4f5a6b7c8"


class InstanceAuth:
    """Who a request is, tokens issued to OAuth clients, and the rate limit counters."""

    def __init__(
        self,
        users: Mapping[str, str],
        oauth_clients: Mapping[str, tuple[str, str]],
        clock: Clock,
        token_ttl_s: int,
    ) -> None:
        self._users = dict(users)
        self._clients = dict(oauth_clients)  # client_id -> (secret, application user)
        self.clock = clock
        self.token_ttl_s = token_ttl_s
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (user, expires_at)
        self._rule: RateLimitRule | None = None
        self._rate_counts: dict[tuple[str, int], int] = {}

    def set_rate_limit(self, rule: RateLimitRule | None) -> None:
        """Install (or remove with None) the rate limit rule; counters restart."""
        with self._lock:
            self._rule = rule
            self._rate_counts.clear()

    def expire_tokens(self) -> None:
        """Invalidate every issued OAuth access token now."""
        with self._lock:
            self._tokens.clear()

    def authenticate(self, header: str) -> str | None:
        """The user an ``Authorization`` header proves, or None."""
        scheme, _, cred = header.partition(" ")
        if scheme.lower() == "basic":
            name, password = _basic(cred)
            expected = self._users.get(name)
            ok = expected is not None and secrets.compare_digest(
                expected.encode(), password.encode()
            )
            return name if ok else None
        if scheme.lower() == "bearer":
            with self._lock:
                entry = self._tokens.get(cred.strip())
            if entry is not None and self.clock.now() < entry[1]:
                return entry[0]
        return None

    def issue_token(self, req: Request) -> Response:
        """Answer ``POST /oauth_token.do`` (client credentials, in the form or basic auth)."""
        form = dict(parse_qsl(req.body.decode("utf-8", "replace")))
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_id:  # client_secret_basic: credentials in the Authorization header
            client_id, secret = _basic(req.headers.get("authorization", "").partition(" ")[2])
        if form.get("grant_type") != "client_credentials":
            return Response(
                400,
                {"error": "unsupported_grant_type", "error_description": "only client_credentials"},
            )
        client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client[0].encode(), secret.encode()):
            return Response(401, {"error": "invalid_client", "error_description": "access_denied"})
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = (client[1], self.clock.now() + self.token_ttl_s)
        body = {"access_token": token, "scope": "useraccount", "token_type": "Bearer",
                "expires_in": self.token_ttl_s - 1}  # fmt: skip
        return Response(200, body)

    def rate_limit(self, user: str, method: str, table: str) -> tuple[bool, dict[str, str]]:
        """Count one request; (blocked, rate limit headers to send)."""
        rule = self._rule
        if rule is None or any(
            want is not None and want != got
            for want, got in ((rule.user, user), (rule.method, method), (rule.table, table))
        ):
            return False, {}
        now = self.clock.now()
        window = int(now // 3600) * 3600  # hourly windows, reset at the top of the hour
        reset = window + 3600
        with self._lock:
            used = self._rate_counts.get((user, window), 0)
            blocked = used >= rule.limit
            self._rate_counts[(user, window)] = used + (0 if blocked else 1)
        headers: dict[str, str] = {}
        if rule.mode == "retry_after":
            headers = {"X-RateLimit-Limit": str(rule.limit), "X-RateLimit-Reset": str(reset),
                       "X-RateLimit-Rule": rule.rule_id}  # fmt: skip
            if blocked:
                headers["Retry-After"] = str(max(1, math.ceil(reset - now)))
        elif rule.mode == "reset_only" and blocked:
            headers["X-RateLimit-Reset"] = str(reset)
        return blocked, headers


def _basic(cred: str) -> tuple[str, str]:
    try:
        name, _, password = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return name, password
