"""Dataverse webhook: authentication and the ``RemoteExecutionContext`` it posts.

Authentication. A Dataverse webhook cannot sign its body; it can only send a static key
(``serviceendpoint.authtype``): 4 *WebhookKey* appends ``?code=<key>`` to the URL, 5 *HttpHeader*
sends ``<Name>: <key>`` headers. Both are supported, chosen explicitly by ``WebhookKeys.source``:

* ``header`` (recommended, default name ``x-triage-key``): the key never appears in a URL, so
  it stays out of the Functions host's and proxies' access logs and of the step's registration
  URL. Register the endpoint with authtype 5 and ``x-triage-key: <key>``.
* ``code``: the Functions host's own key parameter; useful when the route keeps
  ``auth_level=FUNCTION`` and the key is a host function key (authtype 4).

The given key is compared with every configured key in constant time (SHA-256 of both, then
``hmac.compare_digest``, so neither content nor length leaks). Rotation: configure the new key
next to the old one, update ``serviceendpoint.authvalue`` (write-only in Dataverse), then drop
the old key. A refusal is a 401 ``SignatureError`` that never echoes the key.

Replay. There is no timestamp and no MAC, so anyone holding a captured request (or the key) can
send it again at any time; TLS and key rotation are the only protections. That is acceptable
because the request carries nothing we trust: the worker re-reads the case with our own
credentials, and the claim store keys each write on ``(record, input hash)``, so a replayed
Create enriches nothing twice; at worst it costs one re-read. A forged body can name only a
record id, which is re-read under the application user's own permissions.

Parsing. ``parse_dataverse_event`` accepts UTF-8 JSON only (the hardened ``triage.inbound``
helpers: depth, number and BOM limits), reads keys case-insensitively (``key``/``Key``, ...),
decodes ``/Date(ms[+-hhmm])/`` (the milliseconds are UTC; the offset is only the sender's zone),
``OptionSetValue`` (an int), ``Money`` (a float) and ``EntityReference`` (``_<name>_value`` plus
its ``@Microsoft.Dynamics.CRM.lookuplogicalname``, the Web API's shape). Untyped objects, arrays
and unknown typed values are left out (the worker re-reads the record anyway). With
``x-ms-dynamics-msg-size-exceeded`` (body over 256 KB) Dataverse removes the parameters and
images: the event stays valid and says ``needs_reread``. Every refusal is an ``InboundError``
(4xx) with a bounded message naming the problem, never the input.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.errors import ConfigError, InboundError, SignatureError
from triage.inbound import bounded, check_size, describe_validation_error, excerpt, parse_json

__all__ = [
    "DEFAULT_KEY_HEADER",
    "SIZE_EXCEEDED_HEADER",
    "AttributeValue",
    "DataverseEvent",
    "WebhookKeys",
    "check_dataverse_auth",
    "is_own_event",
    "parse_dataverse_event",
]

DEFAULT_KEY_HEADER = "x-triage-key"
CODE_PARAM = "code"
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
ENTITY_HEADER = "x-ms-dynamics-entity-name"
REQUEST_HEADER = "x-ms-dynamics-request-name"
#: ``serviceendpoint.authvalue`` holds at most 2048 characters.
MAX_KEY_CHARS = 2048
MIN_KEY_CHARS = 16
MAX_ATTRIBUTES = 1000

AttributeValue = str | int | float | bool | datetime | None

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_NIL_GUID = "00000000-0000-0000-0000-000000000000"
_LOGICAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_PARAMETER = re.compile(r"[!-~]{1,100}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_KEY_CHARS = re.compile(r"[!-~]+")  # printable ASCII without spaces
_DATE = re.compile(r"/Date\((-?[0-9]{1,15})(?:[+-][0-9]{4})?\)/")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = int((datetime(1, 1, 2, tzinfo=UTC) - _EPOCH).total_seconds() * 1000)
_MAX_MS = int((datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH).total_seconds() * 1000)


@dataclass(frozen=True)
class WebhookKeys:
    """Where the key is sent (``header`` or the ``code`` query parameter) and the keys accepted.

    Several keys are accepted during a rotation. Keys are 16 to 2048 printable ASCII characters.
    """

    keys: tuple[str, ...]
    source: Literal["header", "code"] = "header"
    header: str = DEFAULT_KEY_HEADER

    def __post_init__(self) -> None:
        if self.source not in ("header", "code"):
            raise ConfigError("webhook key source must be 'header' or 'code'")
        if not _HEADER_NAME.fullmatch(self.header):
            raise ConfigError("webhook key header must be 1 to 64 letters, digits or '-'")
        if not self.keys:
            raise ConfigError("at least one webhook key is required")
        for key in self.keys:  # the message never names the key itself
            if not (MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS and _KEY_CHARS.fullmatch(key)):
                raise ConfigError(
                    f"webhook keys must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} printable ASCII "
                    "characters without spaces"
                )


def check_dataverse_auth(
    headers: Mapping[str, str], query: Mapping[str, str], keys: WebhookKeys
) -> None:
    """Raise ``SignatureError`` (401) unless the request carries one of the configured keys."""
    if keys.source == "header":
        where = f"{keys.header} header"
        wanted = keys.header.lower()
        given = next((v for k, v in headers.items() if k.lower() == wanted), None)
    else:
        where = f"{CODE_PARAM} query parameter"
        given = query.get(CODE_PARAM)
    if not given or not given.strip(" \t"):
        raise SignatureError(f"missing webhook key ({where})")
    digest = hashlib.sha256(given.strip(" \t").encode("utf-8", "surrogatepass")).digest()
    matched = False
    for key in keys.keys:  # no short cut: every key is compared
        matched |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    if not matched:
        raise SignatureError(f"webhook key does not match ({where})")


class DataverseEvent(BaseModel):
    """What the service needs from one webhook call. Identifiers are lower-case GUIDs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    entity: str
    message: str
    user_id: str
    initiating_user_id: str
    depth: int
    correlation_id: str | None = None
    organization: str | None = None
    operation_created_on: datetime | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    needs_reread: bool = False


def is_own_event(event: DataverseEvent, application_user_id: str | None) -> bool:
    """True if our own application user (``systemuserid`` from ``WhoAmI``) caused the event."""
    if not application_user_id:
        return False
    ours = application_user_id.strip().strip("{}").lower()
    return ours in (event.user_id, event.initiating_user_id)


def parse_dataverse_event(
    body: bytes,
    headers: Mapping[str, str],
    *,
    max_bytes: int,
    allowed_entities: Collection[str] = ("incident",),
    allowed_messages: Collection[str] = ("Create",),
) -> DataverseEvent:
    """Validate a ``RemoteExecutionContext`` body, raising ``InboundError`` (4xx) when refused."""
    check_size(body, max_bytes)
    lowered = {k.lower(): v for k, v in headers.items()}
    _check_content_type(lowered.get("content-type"))
    context = _object(_decode(body), "body")
    given = _text(context, "MessageName")
    message = next((m for m in allowed_messages if m.lower() == given.lower()), None)
    if message is None:
        raise _invalid(f"MessageName {excerpt(given)!r} is not handled", "message_not_allowed")
    entity = _text(context, "PrimaryEntityName").lower()
    if entity not in {e.lower() for e in allowed_entities}:
        raise _invalid(f"entity {excerpt(entity)!r} is not enabled", "table_not_allowed")
    for header, value in ((ENTITY_HEADER, entity), (REQUEST_HEADER, message.lower())):
        if header in lowered and lowered[header].strip().lower() != value:
            raise _invalid(f"the {header} header disagrees with the body")
    record_id = _guid(context.get("primaryentityid"), "PrimaryEntityId")
    if record_id == _NIL_GUID:
        raise _invalid("PrimaryEntityId is the empty GUID")
    depth = context.get("depth")
    if type(depth) is not int or not 0 <= depth <= 2**31 - 1:
        raise _invalid("Depth must be a non-negative 32-bit integer")
    correlation = context.get("correlationid")
    created = context.get("operationcreatedon")
    organization = lowered.get("x-ms-dynamics-organization") or context.get("organizationname")
    size_exceeded = SIZE_EXCEEDED_HEADER in lowered
    target = None if size_exceeded else _target(context, entity, record_id)
    try:
        return DataverseEvent(
            record_id=record_id,
            entity=entity,
            message=message,
            user_id=_guid(context.get("userid"), "UserId"),
            initiating_user_id=_guid(context.get("initiatinguserid"), "InitiatingUserId"),
            depth=depth,
            correlation_id=None if correlation is None else _guid(correlation, "CorrelationId"),
            organization=excerpt(organization, 100) if isinstance(organization, str) else None,
            operation_created_on=None if created is None else _date(created, "OperationCreatedOn"),
            attributes={} if target is None else _attributes(target),
            needs_reread=target is None,
        )
    except ValidationError as exc:  # not expected: every field is checked above
        problems = describe_validation_error(exc, what="body")
        raise _invalid(f"invalid webhook body: {problems}") from exc


# --- decoding ---------------------------------------------------------------------------------
def _invalid(message: str, code: str = "invalid_body") -> InboundError:
    return InboundError(bounded(message), code=code)


def _check_content_type(content_type: str | None) -> None:
    """JSON or nothing (Dataverse sends application/json); a charset must be utf-8."""
    if content_type is None:
        return
    media_type, _, params = content_type.partition(";")
    media_type = media_type.strip().lower()
    charsets = [
        value.strip().strip('"').lower()
        for name, _, value in (p.partition("=") for p in params.split(";"))
        if name.strip().lower() == "charset"
    ]
    if media_type != "application/json" or any(c != "utf-8" for c in charsets):
        raise InboundError(
            f"content type must be application/json (utf-8), not {excerpt(content_type)}",
            status=415,
            code="unsupported_media_type",
        )


def _decode(body: bytes) -> Any:
    if body.startswith(codecs.BOM_UTF8):
        raise _malformed("it starts with a byte order mark; send UTF-8 without one")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"not UTF-8 (byte {exc.start})") from exc
    try:
        return parse_json(text)
    except ValueError as exc:
        raise _malformed(str(exc)) from exc


def _malformed(reason: str) -> InboundError:
    return InboundError(bounded(f"body is not valid JSON: {reason}"), code="malformed_json")


def _object(value: Any, what: str) -> dict[str, Any]:
    """A JSON object with lower-cased keys; keys differing only in case are ambiguous."""
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be a JSON object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        lower = key.lower()
        if lower in out:
            raise _invalid(f"{what} has the key {excerpt(key)!r} twice (keys ignore case)")
        out[lower] = item
    return out


def _text(context: dict[str, Any], name: str) -> str:
    value = context.get(name.lower())
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{name} must be a non-empty string")
    return value.strip()


def _guid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _GUID.fullmatch(value.strip().strip("{}")):
        raise _invalid(f"{what} must be a GUID")
    return value.strip().strip("{}").lower()


def _date(value: Any, what: str) -> datetime:
    """``/Date(ms)/`` or ``/Date(ms-0700)/``: milliseconds since the epoch, UTC."""
    match = _DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(f"{what} must be a /Date(milliseconds)/ value")
    ms = int(match.group(1))
    if not _MIN_MS <= ms <= _MAX_MS:
        raise _invalid(f"{what} is out of the datetime range")
    return _EPOCH + timedelta(milliseconds=ms)


def _pairs(value: Any, what: str, names: re.Pattern[str] = _PARAMETER) -> dict[str, Any]:
    """A ``[{"key": k, "value": v}, ...]`` array (any key casing) as a dict; unique keys only."""
    if value is None:
        return {}
    if not isinstance(value, list) or len(value) > MAX_ATTRIBUTES:
        raise _invalid(f"{what} must be an array of at most {MAX_ATTRIBUTES} key/value pairs")
    out: dict[str, Any] = {}
    for item in value:
        pair = _object(item, f"an item of {what}")
        key = pair.get("key")
        if not isinstance(key, str) or not names.fullmatch(key):
            raise _invalid(f"an item of {what} has no valid key")
        if key.lower() in out:
            raise _invalid(f"{what} has the key {excerpt(key)!r} twice")
        out[key.lower()] = pair.get("value")
    return out


def _target(context: dict[str, Any], entity: str, record_id: str) -> dict[str, Any] | None:
    """The ``Target`` entity of ``InputParameters``, or None when Dataverse left it out."""
    target = _pairs(context.get("inputparameters"), "InputParameters").get("target")
    if target is None:
        return None
    target = _object(target, "Target")
    name = target.get("logicalname")
    if name is not None and (not isinstance(name, str) or name.lower() != entity):
        raise _invalid("Target.LogicalName differs from PrimaryEntityName")
    target_id = target.get("id")
    if target_id is not None and _guid(target_id, "Target.Id") not in (record_id, _NIL_GUID):
        raise _invalid("Target.Id differs from PrimaryEntityId")
    return target


def _attributes(target: dict[str, Any]) -> dict[str, AttributeValue]:
    """Target.Attributes as Web API-shaped values (lookups as ``_<name>_value``)."""
    out: dict[str, AttributeValue] = {}
    for name, raw in _pairs(target.get("attributes"), "Target.Attributes", _LOGICAL_NAME).items():
        if isinstance(raw, str):
            out[name] = _date(raw, name) if _DATE.fullmatch(raw) else raw
        elif raw is None or isinstance(raw, bool | int | float):
            out[name] = raw
        elif isinstance(raw, dict):
            out.update(_typed(name, _object(raw, name)))
    return out


def _typed(name: str, value: dict[str, Any]) -> dict[str, AttributeValue]:
    """An ``OptionSetValue``, ``Money`` or ``EntityReference`` value; {} for other types."""
    kind = value.get("__type")
    kind = kind.partition(":")[0].lower() if isinstance(kind, str) else ""
    if kind == "optionsetvalue":
        number = value.get("value")
        if type(number) is not int or not -(2**31) <= number < 2**31:
            raise _invalid(f"{name}: an OptionSetValue needs a 32-bit integer Value")
        return {name: number}
    if kind == "money":
        amount = value.get("value")
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise _invalid(f"{name}: a Money value needs a numeric Value")
        return {name: float(amount)}
    if kind == "entityreference":
        target = value.get("logicalname")
        if not isinstance(target, str) or not _LOGICAL_NAME.fullmatch(target):
            raise _invalid(f"{name}: an EntityReference needs a LogicalName")
        return {
            f"_{name}_value": _guid(value.get("id"), f"{name}.Id"),
            f"_{name}_value@Microsoft.Dynamics.CRM.lookuplogicalname": target.lower(),
        }
    return {}
