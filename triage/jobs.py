"""The queue message between the webhook and the worker, and the poison-queue envelope.

A job message is strict JSON: ``version`` must be the integer 1 (not ``true`` or ``1.0``),
numbers must be finite, and no field is coerced from another type; ``received_at`` and
``requeues`` still take JSON numbers (an integral ``received_at`` included), so a job survives
``to_message`` → ``from_message``. Every failure to parse is an ``InboundError`` with code
``malformed_job`` and a bounded message that never echoes values.

What cannot be processed goes to the poison queue as ``poison_message``: a small JSON envelope
with the reason, the sha256 and size of the bytes received, and the original text cut to fit
well under the queue's 64 KiB limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from domain.errors import InboundError
from domain.models import GUID_PATTERN, RECORD_ID_PATTERNS, SYS_ID_PATTERN, TABLE_PATTERN
from triage.inbound import bounded, describe_validation_error, excerpt, parse_json
from triage.telemetry import valid_traceparent

__all__ = [
    "JOBS_QUEUE",
    "MAX_POISON_CHARS",
    "EnrichJob",
    "message_bytes",
    "poison_message",
]

#: Queue name; host.json, the bindings in function_app.py and Bicep use the same literal.
JOBS_QUEUE = "enrich-jobs"

#: A poison envelope is at most this many (ASCII) characters: 43 KiB once base64 encoded,
#: well under the queue's 64 KiB.
MAX_POISON_CHARS = 32 * 1024
_MAX_EXCERPT_BYTES = 16 * 1024
_MAX_REASON_CHARS = 300


class EnrichJob(BaseModel):
    """Enrich one record. Carries identifiers only: the worker re-reads the record."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    version: Literal[1] = 1
    system: Literal["servicenow", "dataverse"] = "servicenow"
    table: str = Field(pattern=TABLE_PATTERN)
    record_id: str = Field(pattern=f"{SYS_ID_PATTERN}|{GUID_PATTERN}")
    received_at: float = Field(ge=0)
    requeues: int = Field(0, ge=0)
    source: Literal["webhook", "backfill", "cli"] = "webhook"
    #: The W3C trace context of the webhook's span (``00-<trace>-<span>-<flags>``), so the
    #: worker continues the same trace. Optional; only its format is trusted.
    traceparent: str | None = Field(None, max_length=55)

    @field_validator("traceparent")
    @classmethod
    def _w3c_traceparent(cls, value: str | None) -> str | None:
        if value is not None and not valid_traceparent(value):
            raise ValueError("traceparent is not a W3C version-00 trace context")
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _integer_version(cls, value: object) -> object:
        # Literal[1] compares by equality, so even strict mode lets True and 1.0 through.
        if type(value) is not int:
            raise ValueError("version must be the integer 1")
        return value

    @model_validator(mode="after")
    def _record_id_of_its_system(self) -> EnrichJob:
        if not re.fullmatch(RECORD_ID_PATTERNS[self.system], self.record_id):
            raise ValueError(f"record_id is not a {self.system} record id")
        return self

    def to_message(self) -> str:
        """Serialise for the queue (the binding / SDK base64-encodes it); no null trace."""
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_message(cls, message: bytes | str) -> EnrichJob:
        """Parse a queue message (bytes are decoded as strict UTF-8).

        Raises ``InboundError(code="malformed_job")`` naming the problem, never the values.
        """
        try:
            text = message.decode("utf-8") if isinstance(message, bytes) else message
        except UnicodeDecodeError as exc:
            raise _malformed(f"job message is not UTF-8 (byte {exc.start})") from exc
        try:
            data = parse_json(text)
        except ValueError as exc:
            raise _malformed(f"job message is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _malformed("job message must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = describe_validation_error(exc, what="message")
            raise _malformed(f"malformed job message: {problems}") from exc


def _malformed(message: str) -> InboundError:
    return InboundError(bounded(message), code="malformed_job")


def message_bytes(message: bytes | str) -> bytes:
    """The bytes a message was received as (text is UTF-8 encoded, lone surrogates kept)."""
    if isinstance(message, bytes):
        return message
    return message.encode("utf-8", errors="surrogatepass")


def poison_message(raw: bytes | str, reason: str) -> str:
    """The poison-queue envelope for ``raw``; never raises, always under ``MAX_POISON_CHARS``.

    ``{"reason", "sha256", "size", "message"}``: the reason (cut to 300 printable ASCII
    characters), the sha256 (hex) and byte count of what was received, and its text
    (undecodable bytes replaced) cut at a character boundary with ``…[truncated N bytes]``.
    """
    data = message_bytes(raw)
    head = {
        "reason": excerpt(reason, _MAX_REASON_CHARS),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    limit = _MAX_EXCERPT_BYTES
    while True:
        # JSON escapes can grow a byte sixfold (a bad byte becomes "\ufffd"): shrink until it fits.
        envelope = json.dumps({**head, "message": _cut(data, limit)})
        if len(envelope) <= MAX_POISON_CHARS:
            return envelope
        limit //= 2


def _cut(data: bytes, limit: int) -> str:
    if len(data) <= limit:
        return data.decode("utf-8", errors="replace")
    end = limit
    while end > 0 and end > limit - 3 and data[end] & 0xC0 == 0x80:
        end -= 1  # back up to the start of a UTF-8 sequence rather than split it
    kept = data[:end].decode("utf-8", errors="replace")
    return f"{kept}…[truncated {len(data) - end} bytes]"
