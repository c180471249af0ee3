"""A loopback simulator of the Dataverse Web API and Entra ID token endpoint (dataverse.md §11).

Serves HTTPS by default (``tls=True``: a throw-away self-signed certificate, trusted via
``ca_path``) because msal refuses non-https authorities. Routes:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration``, ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials; scope ``https://<org>.crm.dynamics.com/.default``), see dataverse_auth;
- ``/api/data/v9.2/...``: ``WhoAmI``, ``incidents``, ``annotations``, ``emails``, ``subjects``
  (collections and ``(<guid>)`` records), option set metadata of ``incident`` and ``$batch``,
  see dataverse_api and dataverse_batch_exec; the webhook registration tables
  ``serviceendpoints``, ``sdkmessageprocessingsteps``, ``sdkmessages``, ``sdkmessagefilters``,
  see dataverse_admin (a step created through them fires like ``register_webhook``).

Every answer carries ``x-ms-service-request-id`` (and ``REQ_ID``); Web API answers carry
``OData-Version: 4.0``. Service protection limits (dataverse_limits) apply per user to Web API
requests, a ``$batch`` counting as one. ``fail_next`` faults apply to Web API requests only.

Webhooks: ``register_webhook`` registers an async PostOperation Create step on ``incident``;
each committed create (HTTP, ``$batch`` or ``add_case(..., fire=True)``) not bypassed with
``MSCRM.BypassBusinessLogicExecution: CustomAsync`` (or the step id in
``MSCRM.BypassBusinessLogicExecutionStepIds``) is queued and POSTed by a background thread;
``flush()`` waits for the queue, ``deliveries()`` lists what was sent and each attempt's status.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tests.simulators import Clock, FakeClock, LoopbackServer, Request, Response, SystemClock
from tests.simulators.dataverse_admin import AdminWebApi, AdminWebhookHub, install
from tests.simulators.dataverse_api import API_PREFIX, BeforeWrite, Call, error
from tests.simulators.dataverse_auth import (
    AppClient,
    TokenService,
    make_certificate,
    server_context,
)
from tests.simulators.dataverse_batch_exec import run_batch
from tests.simulators.dataverse_limits import Limits, ServiceProtection
from tests.simulators.dataverse_store import Store
from tests.simulators.dataverse_webhook import Delivery

__all__ = ["PERSON", "DataverseSimulator", "Delivery", "FakeClock", "Limits", "LoggedRequest"]

DEFAULT_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
PERSON = "a1a1a1a1-0000-4000-8000-000000000001"  # systemuserid of "a person" (update_record)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the simulator saw it; status 0 means the connection was dropped."""

    method: str
    path: str
    query: dict[str, str]
    user: str | None
    status: int
    body: Any = None


class DataverseSimulator(LoopbackServer):
    """In-memory Dataverse environment + tenant on 127.0.0.1 (ephemeral port)."""

    server_header = "Microsoft-IIS/10.0"

    def __init__(
        self,
        clients: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        *,
        org: str = "contoso",
        tenant: str = DEFAULT_TENANT,
        token_ttl_s: int = 3600,
        tls: bool = True,
        limits: Limits | None = None,
        require_customer: bool = True,
    ) -> None:
        """``clients`` maps client id -> secret (or PEM certificate); each acts as its own
        application user."""
        super().__init__()
        self.clock: Clock = clock or SystemClock()
        self.tls = tls
        self.org = org
        self.organization_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{org}.org"))
        self.business_unit_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{org}.bu"))
        apps = [
            AppClient(cid, secret, str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{org}.{cid}")))
            for cid, secret in (clients if clients is not None else {"client": "secret"}).items()
        ]
        self.tokens = TokenService(tenant, self.org_url, apps, self.clock, token_ttl_s)
        self.protection = ServiceProtection(self.clock, limits)
        self.store = Store(self.clock)
        self.store.require_customer = require_customer
        install(self.store)  # serviceendpoints, sdkmessage(filter)s, steps: dataverse_admin
        self.api = AdminWebApi(
            self.store, lambda: self.url, (self.organization_id, self.business_unit_id)
        )
        self._lock = threading.Lock()
        self._faults: list[Response] = []
        self._log: list[LoggedRequest] = []
        identity = (self.organization_id, self.org, self.business_unit_id)
        self.hooks = AdminWebhookHub(self.store, identity, f"{self.org}.crm.dynamics.com")
        self._tmp: Path | None = None
        self.ca_path: str | None = None

    # ---- lifecycle and addresses -------------------------------------------------------------

    def start(self) -> DataverseSimulator:
        """Create the certificate (with ``tls``), start the webhook thread and serve."""
        if self.tls and self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="dataverse-sim-"))
            cert, key = make_certificate(self._tmp)
            self.ssl_context, self.ca_path = server_context(cert, key), str(cert)
        self.hooks.emitter.start()
        super().start()
        return self

    def stop(self) -> None:
        """Stop serving, deliver queued webhooks, delete the certificate."""
        super().stop()
        self.hooks.emitter.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def org_url(self) -> str:
        """The environment URL the simulator claims to be (token audience)."""
        return f"https://{self.org}.crm.dynamics.com"

    @property
    def scope(self) -> str:
        """The scope to ask tokens for."""
        return f"{self.org_url}/.default"

    @property
    def tenant(self) -> str:
        """The tenant id in the authority path."""
        return self.tokens.tenant

    @property
    def authority(self) -> str:
        """msal authority: ``https://127.0.0.1:<port>/<tenant>``."""
        return f"{self.url}/{self.tenant}"

    @property
    def api_url(self) -> str:
        """Service root: ``https://127.0.0.1:<port>/api/data/v9.2``."""
        return self.url + API_PREFIX.rstrip("/")

    def user_id(self, client_id: str) -> str:
        """systemuserid of the application user of ``client_id``."""
        return self.tokens.clients[client_id].user_id

    # ---- configuration and faults ------------------------------------------------------------

    @property
    def limits(self) -> Limits:
        """Service protection limits in force (mutable)."""
        return self.protection.limits

    def expire_tokens(self) -> None:
        """Invalidate every issued access token now (next use answers 401)."""
        self.tokens.expire_all()

    def fail_next(
        self, count: int, status: int = 503, code: str = "", message: str = "Service Unavailable",
        *, retry_after_s: int | None = None,
    ) -> None:  # fmt: skip
        """Answer the next ``count`` Web API requests with ``status`` and an error body."""
        headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
        with self._lock:
            self._faults += [error(status, code, message, **headers) for _ in range(count)]

    def reset_faults(self) -> None:
        """Clear pending error answers, connection drops and latency."""
        super().reset_faults()
        with self._lock:
            self._faults.clear()

    def before_write(self, callback: BeforeWrite | None) -> None:
        """Call ``callback(entity_set, id, body)`` when a PATCH of an existing record arrives,
        before its If-Match check and write, outside locks (it may call ``update_record``)."""
        self.api.before_write = callback

    def set_choices(self, column: str, options: Mapping[int, str]) -> None:
        """Replace the options of an incident choice column, or add a custom one."""
        self.store.set_choices(column, options)

    # ---- seeding and introspection -------------------------------------------------------------

    def add_case(
        self, fields: Mapping[str, Any] | None = None, *, user: str = PERSON, fire: bool = False
    ) -> str:
        """Insert an incident without HTTP or validation (``_subjectid_value``, ``createdon``,
        closed states allowed); ``fire`` announces it to the webhooks. Returns its id."""
        values = {"_customerid_value": str(uuid.uuid4()), **(fields or {})}
        self._known("incidents", values)
        rec, _ = self.store.write("incidents", None, values, user, validate=False)
        if fire:
            self.hooks.announce([rec["incidentid"]])
        return str(rec["incidentid"])

    def add_subject(self, title: str, parent: str | None = None) -> str:
        """Insert a subject (a node of the subject tree); returns its id."""
        values = {"title": title, "_parentsubject_value": parent}
        rec, _ = self.store.write("subjects", None, values, PERSON, validate=False)
        return str(rec["subjectid"])

    def add_email(
        self, case_id: str, html: str, subject: str = "", createdon: str | None = None
    ) -> str:
        """Insert an email activity regarding ``case_id`` with an HTML description."""
        values = {
            "_regardingobjectid_value": case_id.lower(),
            "description": html,
            "subject": subject,
        }
        if createdon is not None:
            values["createdon"] = createdon
        rec, _ = self.store.write("emails", None, values, PERSON, validate=False)
        return str(rec["activityid"])

    def get_case(self, case_id: str) -> dict[str, Any] | None:
        """The stored incident (a copy), or None."""
        with self.store.lock:
            rec = self.store.tables["incidents"].get(case_id.lower())
            return None if rec is None else {k: v for k, v in rec.items() if "@" not in k}

    def annotations(self, case_id: str) -> list[dict[str, Any]]:
        """Notes attached to ``case_id``, oldest first."""
        with self.store.lock:
            rows = [
                r
                for r in self.store.tables["annotations"].values()
                if r.get("_objectid_value") == case_id.lower()
            ]
            return sorted(
                (dict(r) for r in rows), key=lambda r: (r["createdon"], r["versionnumber"])
            )

    def update_record(
        self, case_id: str, fields: Mapping[str, Any], user: str = PERSON
    ) -> dict[str, Any]:
        """Edit a case as ``user`` (a person) would, without HTTP: bumps the etag and stamps
        modifiedon/_modifiedby_value. Unknown columns raise ValueError, a missing case KeyError."""
        self._known("incidents", fields)
        with self.store.lock:
            if case_id.lower() not in self.store.tables["incidents"]:
                raise KeyError(case_id)
            rec, _ = self.store.write("incidents", case_id.lower(), fields, user, validate=False)
        return rec

    def _known(self, entity_set: str, fields: Mapping[str, Any]) -> None:
        schema = self.store.schemas[entity_set]
        unknown = [k for k in fields if k not in schema.columns and not k.endswith("@odata.bind")]
        if unknown:
            raise ValueError(f"unknown columns for {entity_set}: {sorted(unknown)}")

    @property
    def request_log(self) -> list[LoggedRequest]:
        """Every request so far (token request bodies are never kept)."""
        with self._lock:
            return list(self._log)

    # ---- webhooks -----------------------------------------------------------------------------

    def register_webhook(
        self, url: str, *, key: str | None = None, header: tuple[str, str] | None = None,
        verify: bool | str = True,
    ) -> str:  # fmt: skip
        """Register a webhook (WebhookKey ``?code=`` or HttpHeader auth) on Create of incident,
        async PostOperation; returns the step id."""
        return self.hooks.register(url, key, header, verify)

    def webhook_body(
        self, case_id: str, step_id: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body a Create webhook for ``case_id`` (as stored now) would carry."""
        return self.hooks.body(case_id, step_id)

    def deliveries(self) -> list[Delivery]:
        """Every webhook event queued so far, with the status of each attempt."""
        return self.hooks.emitter.deliveries()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued webhook event was attempted."""
        return self.hooks.emitter.flush(timeout_s)

    # ---- request pipeline ---------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        """Token endpoints, else faults, auth, service protection and the Web API."""
        path = unquote(req.path)
        user: str | None = None
        if path.startswith(API_PREFIX):
            with self._lock:
                fault = self._faults.pop(0) if self._faults else None
            user, resp = (None, fault) if fault is not None else self._web_api(req, path)
            resp.headers.setdefault("OData-Version", "4.0")
        else:
            resp = self._identity(req, path)
        req_id = str(uuid.uuid4())
        resp.headers.update({"x-ms-service-request-id": req_id, "REQ_ID": req_id})
        self._record(req, path, user, 0 if resp.drop else resp.status)
        return resp

    def handle_dropped(self, req: Request) -> None:
        """Log a request whose connection was dropped on purpose (status 0)."""
        self._record(req, unquote(req.path), None, 0)

    def _record(self, req: Request, path: str, user: str | None, status: int) -> None:
        body: Any = None
        if path.startswith(API_PREFIX) and req.body:  # never keep token-endpoint secrets
            try:
                body = json.loads(req.body)
            except ValueError:
                body = req.body[:2000].decode("utf-8", "replace")
        with self._lock:
            self._log.append(LoggedRequest(req.method, path, dict(req.query), user, status, body))

    def _identity(self, req: Request, path: str) -> Response:
        tenant = self.tenant
        if path == f"/{tenant}/v2.0/.well-known/openid-configuration" and req.method == "GET":
            return self.tokens.discovery(self.url)
        if path == f"/{tenant}/oauth2/v2.0/token" and req.method == "POST":
            return self.tokens.issue(req, self.url)
        return Response(
            404,
            {
                "error": "invalid_request",
                "error_description": "AADSTS90002: Tenant or endpoint not found.",
            },
        )

    def _web_api(self, req: Request, path: str) -> tuple[str | None, Response]:
        user = self.tokens.authenticate(req.headers.get("authorization", ""))
        if user is None:
            challenge = f"Bearer authorization_uri={self.authority}/oauth2/authorize, resource_id={self.org_url}/"
            return None, Response(401, None, {"WWW-Authenticate": challenge})
        throttled = self.protection.enter(user)
        if throttled is not None:
            return user, error(
                429,
                throttled.code,
                throttled.message,
                **{"Retry-After": str(throttled.retry_after_s)},
            )
        try:
            call = Call(user, req.method, path[len(API_PREFIX) :], req.query, req.headers, req.body)
            if call.resource == "$batch" and req.method == "POST":
                resp = run_batch(
                    self.api,
                    call,
                    lambda ids, c: self.hooks.announce_request(ids, c.headers),
                    lambda: str(uuid.uuid4()),
                )
            else:
                resp = self.api.execute(call)
                self.hooks.announce_request(call.created, call.headers)
        except BaseException:
            self.protection.leave(user)
            raise
        resp.finished.append(lambda: self.protection.leave(user))
        return user, resp


if __name__ == "__main__":
    import sys

    from tests.simulators.__main__ import main

    main(["dataverse", *sys.argv[1:]])
