"""What an admin asks a backfill to do (``BackfillSpec``) and the queue message of one window.

A spec is stored with its run (the checkpoint store's run row), so every instance working on a
window reads the same question: which platform and table, which time range by which clock
(created or updated), the admin's own query, a limit, and whether it is a dry run. Windows
travel through their own Storage queue (``BACKFILL_QUEUE``), apart from the live webhook jobs,
so a backlog of history never sits in front of a new ticket.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.errors import ConfigError, InboundError

__all__ = [
    "BACKFILL_QUEUE",
    "PLATFORMS",
    "BackfillSpec",
    "WindowJob",
    "new_run_id",
    "parse_window_job",
]

#: Windows of backfill runs; live webhook jobs have their own queue (``enrich-jobs``).
BACKFILL_QUEUE = "enrich-backfill"
#: The CLI's platform names and the system each one means.
PLATFORMS = {"servicenow": "servicenow", "dynamics": "dataverse", "dataverse": "dataverse"}
_RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class BackfillSpec(BaseModel):
    """One backfill run's question; stored with the run, read by every window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(pattern=_RUN_ID)
    system: Literal["servicenow", "dataverse"]
    table: str = Field("incident", pattern=r"^[a-z][a-z0-9_]{0,79}$")
    by: Literal["created", "updated"] = "created"
    since: datetime
    until: datetime
    #: The admin's ServiceNow encoded query or Dataverse ``$filter``, ANDed in.
    query: str | None = Field(None, max_length=2000)
    limit: int | None = Field(None, ge=1)
    dry_run: bool = False
    page_size: int = Field(100, ge=1, le=5000)
    #: Tickets per window (a few minutes of work at the paced rate).
    window_tickets: int = Field(500, ge=1, le=100_000)
    origin: Literal["cli", "http", "timer"] = "cli"

    @field_validator("since", "until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def stored(self) -> dict[str, object]:
        """The spec as the run row keeps it (JSON types)."""
        return json.loads(self.model_dump_json())  # type: ignore[no-any-return]

    @classmethod
    def from_stored(cls, data: object) -> BackfillSpec:
        """The spec back from a run row; ``ConfigError`` if it does not read as one."""
        try:
            return cls.model_validate(data)
        except ValidationError:
            raise ConfigError("the run's stored spec is not a backfill spec") from None


def new_run_id(now: datetime | None = None, *, prefix: str = "bf") -> str:
    """A sortable, unique run id: ``bf-20261130-1455-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{prefix}-{moment:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def last_day(
    now: datetime, by: Literal["created", "updated"] = "updated"
) -> tuple[datetime, datetime]:
    """The range a nightly run covers: the 24 hours before ``now`` (whole minutes)."""
    end = now.astimezone(UTC).replace(second=0, microsecond=0)
    return end - timedelta(days=1), end


class WindowJob(BaseModel):
    """The queue message of one window: which run, which window. Nothing else travels."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    run_id: str = Field(pattern=_RUN_ID)
    window: int = Field(ge=0, lt=1_000_000)
    #: Times this window was re-queued after a transient failure (backoff grows with it).
    requeues: int = Field(0, ge=0, lt=10_000)


def parse_window_job(raw: bytes) -> WindowJob:
    """Decode a window message strictly; ``InboundError`` for anything else."""
    if len(raw) > 1024:
        raise InboundError("backfill message too large", status=400, code="invalid_message")
    try:
        return WindowJob.model_validate_json(raw)
    except ValidationError:
        raise InboundError(
            "not a backfill window message", status=400, code="invalid_message"
        ) from None
