"""Webhook registration tables of the Dataverse simulator (dataverse.md §9, [REG], [SEP]).

``install(store)`` adds four entity sets to a simulator's store, served by the generic Web API
(GET with ``$select``/``$filter``/``$orderby``, POST, PATCH with ``If-Match``):

- ``serviceendpoints``: ``name``, ``url``, ``contract``, ``authtype``, ``authvalue``,
  ``messageformat``, ``userclaim``. ``authvalue`` is write-only as on the platform
  (IsValidForRead False): never returned, and ``$select``/``$filter`` on it is refused.
  With authtype 5/6 it must be ``<settings><setting name=".." value=".." /></settings>``.
- ``sdkmessageprocessingsteps``: ``name``, ``stage``, ``mode``, ``rank``, ``asyncautodelete``,
  ``supporteddeployment``, ``filteringattributes``, ``statecode``/``statuscode`` (default
  0/1), lookups ``eventhandler`` (navs ``eventhandler_serviceendpoint``/``_plugintype``),
  ``sdkmessageid``, ``sdkmessagefilterid``; name, stage, mode, message and handler required.
- ``sdkmessages`` and ``sdkmessagefilters``: platform-owned, seeded (Create/Update/Delete on
  incident and annotation) and read-only (a write is 405).

``AdminWebApi`` wraps the simulator's ``WebApi`` for those rules; ``AdminWebhookHub`` makes a
step registered through the API real: an enabled stage 40, mode 1 step for ``Create`` of
``incident`` whose handler is a contract 8 endpoint is delivered to like ``register_webhook``
steps (WebhookKey ``?code=``, the first HttpHeader setting, or HttpQueryString parameters).
Not simulated: synchronous or other-stage steps (they never fire), ``filteringattributes``,
steps on other tables or messages, and endpoint contracts other than 8.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tests.simulators import Response
from tests.simulators.dataverse_api import Call, WebApi, error
from tests.simulators.dataverse_hooks import WebhookHub
from tests.simulators.dataverse_schema import Column, EntitySchema
from tests.simulators.dataverse_store import Store
from tests.simulators.dataverse_webhook import Delivery, Webhook

__all__ = ["ADMIN_SETS", "AdminWebApi", "AdminWebhookHub", "install", "parse_settings"]

_NS = uuid.UUID("5f0b7f8e-4c1e-4c55-9a54-5ad0e0c2d1a0")
ADMIN_SETS = ("serviceendpoints", "sdkmessageprocessingsteps", "sdkmessages", "sdkmessagefilters")
READ_ONLY_SETS = ("sdkmessages", "sdkmessagefilters")
SEEDED_MESSAGES = ("Create", "Update", "Delete")
SEEDED_TABLES = ("incident", "annotation")
CHOICES: dict[str, dict[int, str]] = {
    "contract": {
        1: "OneWay", 2: "Queue", 3: "Rest", 4: "TwoWay", 5: "Topic", 6: "Queue (Persistent)",
        7: "Event Hub", 8: "Webhook", 9: "Event Grid", 10: "Managed Data Lake",
    },
    "authtype": {
        1: "ACS", 2: "SAS Key", 3: "SAS Token", 4: "Webhook Key", 5: "Http Header",
        6: "Http Query String", 7: "Connection String", 8: "Access Key",
    },
    "messageformat": {1: "Binary XML", 2: "Json", 3: "Text XML"},
    "userclaim": {1: "None", 2: "UserId", 3: "UserInfo"},
    "stage": {10: "Pre-validation", 20: "Pre-operation", 40: "Post-operation"},
    "mode": {0: "Synchronous", 1: "Asynchronous"},
    "supporteddeployment": {0: "Server Only", 1: "Client Only", 2: "Both"},
}  # fmt: skip
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "serviceendpoints": (("name",), ("contract",)),
    "sdkmessageprocessingsteps": (
        ("name",), ("stage",), ("mode",), ("sdkmessageid@odata.bind",),
        ("eventhandler_serviceendpoint@odata.bind", "eventhandler_plugintype@odata.bind"),
    ),
}  # fmt: skip
DEFAULTS: dict[str, dict[str, Any]] = {
    "sdkmessageprocessingsteps": {
        "statecode": 0, "statuscode": 1, "rank": 1, "asyncautodelete": False,
        "supporteddeployment": 0,
    },
    "serviceendpoints": {"messageformat": 2, "userclaim": 1},
}  # fmt: skip
_RECORD = re.compile(r"^(\w+)\(([0-9a-fA-F-]{36})\)$")
_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)$")


def _schema(entity_set: str, logical: str, cols: list[Column]) -> EntitySchema:
    schema = EntitySchema(entity_set, logical, f"{logical}id", "name")
    schema.add(Column(f"{logical}id", "guid"))
    for col in [*cols, *_AUDIT]:
        schema.add(col)
    return schema


_AUDIT = (
    Column("createdon", "datetime", readonly=True),
    Column("modifiedon", "datetime", readonly=True),
    Column("createdby", "lookup", targets=("systemusers",), readonly=True),
    Column("modifiedby", "lookup", targets=("systemusers",), readonly=True),
    Column("versionnumber", "int", readonly=True),
)


def build_admin_schemas() -> dict[str, EntitySchema]:
    """Schemas of the four registration entity sets."""
    endpoint = _schema(
        "serviceendpoints",
        "serviceendpoint",
        [
            Column("name", "string", 256), Column("url", "string", 2000),
            Column("description", "memo", 2000), Column("contract", "choice"),
            Column("authtype", "choice"), Column("authvalue", "string", 2048),
            Column("messageformat", "choice"), Column("userclaim", "choice"),
        ],
    )  # fmt: skip
    step = _schema(
        "sdkmessageprocessingsteps",
        "sdkmessageprocessingstep",
        [
            Column("name", "string", 256), Column("description", "string", 256),
            Column("stage", "choice"), Column("mode", "choice"), Column("rank", "int"),
            Column("asyncautodelete", "bool"), Column("supporteddeployment", "choice"),
            Column("filteringattributes", "string", 100_000), Column("statecode", "int"),
            Column("statuscode", "int"),
            Column("sdkmessageid", "lookup", targets=("sdkmessages",)),
            Column("sdkmessagefilterid", "lookup", targets=("sdkmessagefilters",)),
        ],
    )  # fmt: skip
    step.add(
        Column("eventhandler", "lookup", targets=("serviceendpoints", "plugintypes")),
        navs=("eventhandler_serviceendpoint", "eventhandler_plugintype"),
    )
    message = _schema("sdkmessages", "sdkmessage", [Column("name", "string", 256)])
    message_filter = _schema(
        "sdkmessagefilters",
        "sdkmessagefilter",
        [
            Column("name", "string", 256),
            Column("primaryobjecttypecode", "string", 128),
            Column("iscustomprocessingstepallowed", "bool"),
            Column("sdkmessageid", "lookup", targets=("sdkmessages",)),
        ],
    )
    return {s.entity_set: s for s in (endpoint, step, message, message_filter)}


def message_id(name: str) -> str:
    """The (deterministic) id of a seeded sdkmessage."""
    return str(uuid.uuid5(_NS, f"sdkmessage:{name}"))


def filter_id(message: str, table: str) -> str:
    """The (deterministic) id of a seeded sdkmessagefilter."""
    return str(uuid.uuid5(_NS, f"sdkmessagefilter:{message}:{table}"))


def install(store: Store, user: str = "00000000-0000-0000-0000-000000000000") -> None:
    """Add the registration tables, their choices and the seeded messages and filters."""
    with store.lock:
        for entity_set, schema in build_admin_schemas().items():
            store.schemas[entity_set] = schema
            store.tables[entity_set] = {}
        for column, options in CHOICES.items():
            store.choices.setdefault(column, dict(options))
        for message in SEEDED_MESSAGES:
            store.write("sdkmessages", message_id(message), {"name": message}, user, validate=False)
            for table in SEEDED_TABLES:
                values = {
                    "name": f"{message} of {table}",
                    "primaryobjecttypecode": table,
                    "iscustomprocessingstepallowed": True,
                    "_sdkmessageid_value": message_id(message),
                }
                store.write(
                    "sdkmessagefilters", filter_id(message, table), values, user, validate=False
                )


def parse_settings(authvalue: str) -> list[tuple[str, str]]:
    """``<settings><setting name=".." value=".." />...</settings>`` as (name, value) pairs."""
    if "<!" in authvalue:  # no DOCTYPE or entities: nothing to expand
        raise ValueError("declarations are not allowed in an authvalue")
    root = ET.fromstring(authvalue)  # noqa: S314 - declarations refused above
    if root.tag != "settings":
        raise ValueError("the root element must be <settings>")
    pairs = []
    for item in root:
        name, value = item.get("name"), item.get("value")
        if item.tag != "setting" or not name or value is None:
            raise ValueError("each child must be <setting name=.. value=.. />")
        pairs.append((name, value))
    return pairs


class AdminWebApi(WebApi):
    """The simulator's Web API plus the rules of the registration tables."""

    def execute(self, call: Call) -> Response:
        """Refuse what the platform refuses, then run the generic Web API; strip ``authvalue``."""
        refused = self._refuse(call)
        if refused is not None:
            return refused
        resp = super().execute(call)
        entity_set = call.resource.partition("(")[0]
        if entity_set not in ADMIN_SETS:
            return resp
        if call.method == "POST" and resp.status in (201, 204):
            self._defaults(entity_set, resp.headers.get("OData-EntityId", ""))
        if entity_set == "serviceendpoints" and isinstance(resp.body, dict):
            rows = resp.body.get("value")
            for row in rows if isinstance(rows, list) else [resp.body]:
                row.pop("authvalue", None)
        return resp

    def _refuse(self, call: Call) -> Response | None:
        entity_set = call.resource.partition("(")[0]
        if entity_set not in ADMIN_SETS:
            return None
        if call.method != "GET" and entity_set in READ_ONLY_SETS:
            return error(405, "0x80040227", f"The '{call.method}' method is not allowed here.")
        if entity_set == "serviceendpoints":
            for option in ("$select", "$filter", "$orderby"):
                if "authvalue" in call.query.get(option, "").lower():
                    return error(
                        400, "0x80060888", "The attribute 'authvalue' is not valid for read."
                    )
        if call.method not in ("POST", "PATCH"):
            return None
        body = _json_object(call.body)
        if body is None:
            return None  # the generic Web API answers a bad body
        if call.method == "POST":
            for options in REQUIRED.get(entity_set, ()):
                if not any(body.get(o) is not None for o in options):
                    return error(400, "0x80040203", f"'{options[0]}' is required.")
        if entity_set == "serviceendpoints" and "authvalue" in body:
            return self._check_authvalue(call, body)
        return None

    def _check_authvalue(self, call: Call, body: Mapping[str, Any]) -> Response | None:
        authtype = body.get("authtype")
        m = _RECORD.match(call.resource)
        if authtype is None and m is not None:
            with self.store.lock:
                stored = self.store.tables["serviceendpoints"].get(m.group(2).lower()) or {}
            authtype = stored.get("authtype")
        value = body.get("authvalue")
        if authtype in (5, 6) and isinstance(value, str):
            try:
                parse_settings(value)
            except (ET.ParseError, ValueError):
                return error(
                    400,
                    "0x80040203",
                    'The authvalue must be <settings><setting name=".." value=".." />'
                    "</settings> for this authentication type.",
                )
        return None

    def _defaults(self, entity_set: str, entity_id: str) -> None:
        m = _ENTITY_ID.search(entity_id)
        if m is None:
            return
        with self.store.lock:
            rec = self.store.tables[entity_set].get(m.group(1).lower())
            if rec is not None:
                for column, value in DEFAULTS.get(entity_set, {}).items():
                    if rec.get(column) is None:
                        rec[column] = value


class AdminWebhookHub(WebhookHub):
    """Steps registered with ``register`` plus those created through the Web API."""

    api_verify: bool | str = True  # TLS verification for endpoints registered through the API

    def registered(self) -> list[Webhook]:
        """Enabled async Post-operation Create-of-incident steps on webhook endpoints."""
        tables = self.store.tables
        with self.store.lock:
            if "sdkmessageprocessingsteps" not in tables:
                return []
            creates = {i for i, r in tables["sdkmessages"].items() if r.get("name") == "Create"}
            filters = {
                i
                for i, r in tables["sdkmessagefilters"].items()
                if r.get("primaryobjecttypecode") == "incident"
                and r.get("_sdkmessageid_value") in creates
            }
            hooks = []
            for step_id, step in tables["sdkmessageprocessingsteps"].items():
                target = step.get("_eventhandler_value@target", "serviceendpoints")
                endpoint = tables["serviceendpoints"].get(step.get("_eventhandler_value") or "")
                if (
                    step.get("statecode") in (None, 0)
                    and (step.get("stage"), step.get("mode")) == (40, 1)
                    and step.get("_sdkmessageid_value") in creates
                    and step.get("_sdkmessagefilterid_value") in filters
                    and target == "serviceendpoints"
                    and endpoint is not None
                    and endpoint.get("contract") == 8
                    and endpoint.get("url")
                ):
                    hooks.append(self._webhook(step_id, endpoint))
            return hooks

    def _webhook(self, step_id: str, endpoint: Mapping[str, Any]) -> Webhook:
        url, authtype, value = endpoint["url"], endpoint.get("authtype"), endpoint.get("authvalue")
        if authtype == 4 and value:
            return Webhook(step_id, url, key=value, verify=self.api_verify)
        if authtype == 5 and value:
            pairs = parse_settings(value)
            return Webhook(step_id, url, header=pairs[0] if pairs else None, verify=self.api_verify)
        if authtype == 6 and value:
            parts = urlsplit(url)
            query = "&".join(q for q in (parts.query, urlencode(parse_settings(value))) if q)
            url = urlunsplit(parts._replace(query=query))
        return Webhook(step_id, url, verify=self.api_verify)

    def announce(self, case_ids: list[str], bypass_steps: set[str] | None = None) -> None:
        """Queue each case's Create event for the ``register`` steps and the API's steps."""
        super().announce(case_ids, bypass_steps)
        hooks = [h for h in self.registered() if h.step_id not in (bypass_steps or set())]
        for case_id in case_ids:
            for hook in hooks:
                headers, body = self.body(case_id, hook.step_id)
                self.emitter.submit(hook, Delivery(case_id, hook.step_id, headers, body))


def _json_object(raw: bytes) -> dict[str, Any] | None:
    import json

    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
