"""Domain models: the ticket we enrich, what enrichers suggest, and what the pipeline decided."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CANONICAL_FIELDS",
    "FIELD_NAME_PATTERN",
    "GUID_PATTERN",
    "RECORD_ID_PATTERNS",
    "SUMMARY_MAX_CHARS",
    "SYS_ID_PATTERN",
    "TABLE_PATTERN",
    "Decision",
    "EnrichmentResult",
    "Suggestion",
    "Ticket",
]

#: The fields the product fills. Admins may name further label fields (e.g. assignment_group)
#: for the learned enricher; those follow the same ``FIELD_NAME_PATTERN``.
CANONICAL_FIELDS: tuple[str, ...] = (
    "category",
    "subcategory",
    "impact",
    "urgency",
    "priority",
    "summary",
)
FIELD_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
#: ServiceNow sys_id (32 lowercase hex) and table names, shared by every boundary that checks them.
SYS_ID_PATTERN = r"^[0-9a-f]{32}$"
#: A Dataverse record id: a GUID in its canonical lower-case 8-4-4-4-12 form.
GUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
#: The record-id pattern of each platform.
RECORD_ID_PATTERNS = {"servicenow": SYS_ID_PATTERN, "dataverse": GUID_PATTERN}
TABLE_PATTERN = r"^[a-z][a-z0-9_]{0,79}$"
SUMMARY_MAX_CHARS = 160


class Ticket(BaseModel):
    """An immutable, platform-neutral view of one ticket.

    ``current`` holds the ticket's present canonical values (``None`` = unset), so an enricher
    can condition on what a person already chose (e.g. subcategory given a human category).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str = "file"
    record_id: str = ""
    number: str | None = None
    title: str = ""
    description: str = ""
    current: dict[str, str | None] = Field(default_factory=dict)

    @property
    def text(self) -> str:
        """Title and description as one text, the input of every text-based enricher."""
        return f"{self.title}\n{self.description}".strip()


class Suggestion(BaseModel):
    """One enricher's proposal for one field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str = Field(pattern=FIELD_NAME_PATTERN)
    value: str = Field(min_length=1)
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = Field(min_length=1, max_length=300)
    source: str = "unknown"


class Decision(BaseModel):
    """What the policy decided for one suggested field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    action: Literal["write", "suggest", "skip"]
    value: str
    confidence: float
    reason: str
    why: str  # why written or skipped, e.g. "field empty, 0.97 >= 0.90" / "set by a person"


class EnrichmentResult(BaseModel):
    """The outcome of enriching one ticket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    record_id: str
    number: str | None = None
    status: Literal[
        "written", "suggested", "conflict", "nothing_to_write", "skipped", "dry_run", "shadow"
    ]
    detail: str = ""
    suggestions: tuple[Suggestion, ...] = ()
    decisions: tuple[Decision, ...] = ()
    changes: dict[str, str] = Field(default_factory=dict)
    note: str | None = None
