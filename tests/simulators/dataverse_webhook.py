"""The webhook a Dataverse async PostOperation Create step sends (dataverse.md §9).

``build_context`` serialises a RemoteExecutionContext like the platform does (``key``/``value``
arrays, ``\\/Date(ms)\\/``, OptionSetValue, EntityReference; every ``/`` escaped as ``\\/``).
``WebhookEmitter`` delivers on one background thread, in order: POST with a 60 s timeout, one
more attempt only on 502/503/504, each attempt recorded as a ``Delivery``; ``flush`` waits for
the queue to drain. Above 256 KB the images and parameters are removed and
``x-ms-dynamics-msg-size-exceeded`` is set.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from tests.simulators.dataverse_schema import EntitySchema, parse_datetime

__all__ = ["MAX_BODY", "Delivery", "Webhook", "WebhookEmitter", "build_context", "encode_body"]

MAX_BODY = 256 * 1024
_NS = "http://schemas.microsoft.com/xrm/2011/Contracts"
_LOGICAL = {
    "systemusers": "systemuser", "subjects": "subject", "accounts": "account",
    "contacts": "contact", "incidents": "incident",
}  # fmt: skip


@dataclass(frozen=True)
class Webhook:
    """A registered serviceendpoint + step: WebhookKey (``?code=``) or HttpHeader auth."""

    step_id: str
    url: str
    key: str | None = None
    header: tuple[str, str] | None = None
    verify: bool | str = True

    def target(self) -> str:
        """The URL posted to, with ``code=<key>`` for WebhookKey auth."""
        if self.key is None:
            return self.url
        parts = urlsplit(self.url)
        query = "&".join(q for q in (parts.query, urlencode({"code": self.key})) if q)
        return urlunsplit(parts._replace(query=query))


@dataclass
class Delivery:
    """One event: who it went to, each attempt's status (0 = no answer), and the final one."""

    case_id: str
    step_id: str
    headers: dict[str, str]
    body: bytes
    attempts: list[int] = field(default_factory=list)

    @property
    def status(self) -> int:
        """Status of the last attempt (0: connection error or timeout)."""
        return self.attempts[-1] if self.attempts else 0


def _date(iso: str) -> str:
    return f"/Date({int(parse_datetime(iso).timestamp() * 1000)})/"


def _ref(entity_set: str, guid: str) -> dict[str, Any]:
    return {
        "__type": f"EntityReference:{_NS}", "Id": guid, "KeyAttributes": [],
        "LogicalName": _LOGICAL.get(entity_set, entity_set.rstrip("s")), "Name": None,
        "RowVersion": None,
    }  # fmt: skip


def _attributes(schema: EntitySchema, rec: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for attr, col in schema.columns.items():
        value = rec.get(attr)
        if value is None:
            continue
        if col.type == "choice":
            value = {"__type": f"OptionSetValue:{_NS}", "Value": value}
        elif col.type == "lookup":
            value = _ref(rec.get(f"{attr}@target", col.targets[0]), value)
        elif col.type == "datetime":
            value = _date(value)
        out.append({"key": col.name, "value": value})
    return out


def build_context(
    schema: EntitySchema,
    rec: dict[str, Any],
    *,
    user_id: str,
    org: tuple[str, str, str],  # (organization id, unique name, business unit id)
    step_id: str,
) -> dict[str, Any]:
    """The RemoteExecutionContext of an async PostOperation Create of ``rec``."""
    rid = rec[schema.primary_key]
    target = {
        "__type": f"Entity:{_NS}", "Attributes": _attributes(schema, rec), "EntityState": None,
        "FormattedValues": [], "Id": rid, "KeyAttributes": [], "LogicalName": schema.logical_name,
        "RelatedEntities": [], "RowVersion": None,
    }  # fmt: skip
    return {
        "BusinessUnitId": org[2], "CorrelationId": str(uuid.uuid4()), "Depth": 1,
        "InitiatingUserId": user_id, "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False,
        "IsolationMode": 1, "MessageName": "Create", "Mode": 1,
        "OperationCreatedOn": _date(rec["createdon"]), "OperationId": str(uuid.uuid4()),
        "OrganizationId": org[0], "OrganizationName": org[1],
        "OutputParameters": [{"key": "id", "value": rid}],
        "OwningExtension": _ref("sdkmessageprocessingsteps", step_id)
        | {"LogicalName": "sdkmessageprocessingstep"},
        "ParentContext": None, "PostEntityImages": [], "PreEntityImages": [],
        "PrimaryEntityId": rid, "PrimaryEntityName": schema.logical_name, "RequestId": None,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": user_id,
    }  # fmt: skip


def encode_body(context: dict[str, Any], org_host: str) -> tuple[dict[str, str], bytes]:
    """Headers and body as sent; trims the context above 256 KB."""
    headers = {
        "Content-Type": "application/json",
        "x-ms-dynamics-organization": org_host,
        "x-ms-dynamics-entity-name": context["PrimaryEntityName"],
        "x-ms-dynamics-request-name": context["MessageName"],
        "x-ms-correlation-request-id": context["CorrelationId"],
    }
    body = json.dumps(context).replace("/", "\\/").encode()
    if len(body) > MAX_BODY:
        trimmed = {
            k: v
            for k, v in context.items()
            if k not in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages")
        }
        body = json.dumps(trimmed).replace("/", "\\/").encode()
        headers["x-ms-dynamics-msg-size-exceeded"] = "true"
    return headers, body


class WebhookEmitter:
    """Delivers queued events on one background thread; ``flush`` waits until all are sent."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._queue: queue.Queue[tuple[Webhook, Delivery] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the delivery thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Deliver what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, hook: Webhook, delivery: Delivery) -> None:
        """Queue one event."""
        with self._lock:
            self._deliveries.append(delivery)
        self._queue.put((hook, delivery))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was attempted; False on timeout."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout_s)

    def deliveries(self) -> list[Delivery]:
        """Every event submitted so far, in order."""
        with self._lock:
            return list(self._deliveries)

    def _run(self) -> None:
        with requests.Session() as session:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    self._deliver(session, *item)
                finally:
                    self._queue.task_done()

    def _deliver(self, session: requests.Session, hook: Webhook, delivery: Delivery) -> None:
        headers = dict(delivery.headers)
        if hook.header is not None:
            headers[hook.header[0]] = hook.header[1]
        for _ in range(2):
            try:
                resp = session.post(
                    hook.target(),
                    data=delivery.body,
                    headers=headers,
                    timeout=self.timeout_s,
                    verify=hook.verify,
                )
                status = resp.status_code
            except requests.RequestException:
                status = 0
            delivery.attempts.append(status)
            if status not in (502, 503, 504):
                return
