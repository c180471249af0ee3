"""The queue message between the webhook and the worker."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triage.errors import InboundError
from triage.models import SYS_ID_PATTERN, TABLE_PATTERN

__all__ = ["JOBS_QUEUE", "EnrichJob"]

#: Queue name; host.json, the bindings in function_app.py and Bicep use the same literal.
JOBS_QUEUE = "enrich-jobs"


class EnrichJob(BaseModel):
    """Enrich one record. Carries identifiers only: the worker re-reads the record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    system: Literal["servicenow", "dataverse"] = "servicenow"
    table: str = Field(pattern=TABLE_PATTERN)
    record_id: str = Field(pattern=SYS_ID_PATTERN)
    received_at: float = Field(ge=0)
    requeues: int = Field(0, ge=0)
    source: Literal["webhook", "backfill", "cli"] = "webhook"

    def to_message(self) -> str:
        """Serialise for the queue (the binding / SDK base64-encodes it)."""
        return self.model_dump_json()

    @classmethod
    def from_message(cls, text: str) -> EnrichJob:
        """Parse a queue message, raising ``InboundError`` naming the problem."""
        try:
            return cls.model_validate(json.loads(text))
        except json.JSONDecodeError as exc:
            raise InboundError(f"job message is not JSON: {exc.msg}", code="malformed_job") from exc
        except ValidationError as exc:
            # Name the keys and problems, never echo the (untrusted) values.
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}"
                for e in exc.errors()
            )
            raise InboundError(f"malformed job message: {problems}", code="malformed_job") from exc
