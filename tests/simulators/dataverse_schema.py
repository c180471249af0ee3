"""Tables, columns and choices the Dataverse simulator knows (dataverse.md §2).

Records are stored as the Web API shows them: choices as ints, lookups as ``_<name>_value``
GUID strings, datetimes as UTC ISO-8601 strings ending in ``Z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "DEFAULT_CHOICES",
    "SCHEMAS",
    "Column",
    "ColumnType",
    "EntitySchema",
    "ValidationError",
    "format_datetime",
    "parse_datetime",
]

ColumnType = Literal["string", "memo", "choice", "lookup", "datetime", "guid", "bool", "int"]


class ValidationError(Exception):
    """A write the platform refuses: (status, code, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Column:
    """One column; lookups name their target entity sets, ``readonly`` cannot be written."""

    name: str
    type: ColumnType
    max_length: int = 0
    targets: tuple[str, ...] = ()
    readonly: bool = False

    @property
    def attribute(self) -> str:
        """The name the Web API reads it under (``_subjectid_value`` for a lookup)."""
        return f"_{self.name}_value" if self.type == "lookup" else self.name


@dataclass
class EntitySchema:
    """An entity set: logical name, primary key and columns by Web API attribute name."""

    entity_set: str
    logical_name: str
    primary_key: str
    primary_name: str
    columns: dict[str, Column] = field(default_factory=dict)
    binds: dict[str, Column] = field(default_factory=dict)  # nav property -> lookup column

    def add(self, col: Column, *, navs: tuple[str, ...] = ()) -> None:
        """Add a column (and the navigation property names that bind it)."""
        self.columns[col.attribute] = col
        for nav in navs or ((col.name,) if col.type == "lookup" else ()):
            self.binds[nav] = col

    def column(self, attribute: str) -> Column:
        """The column read as ``attribute``; unknown names raise ValidationError (400)."""
        col = self.columns.get(attribute)
        if col is None:
            raise ValidationError(
                400,
                "0x80060888",
                f"Could not find a property named '{attribute}' on type "
                f"'Microsoft.Dynamics.CRM.{self.logical_name}'.",
            )
        return col


def parse_datetime(text: str) -> datetime:
    """Parse ``2024-01-01T00:00:00Z`` (or with an offset, or a bare date) to aware UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_datetime(ts: float) -> str:
    """UNIX seconds as the Web API writes datetimes: ``2026-01-01T00:00:00Z``."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_AUDIT = (
    Column("createdon", "datetime", readonly=True),
    Column("modifiedon", "datetime", readonly=True),
    Column("createdby", "lookup", targets=("systemusers",), readonly=True),
    Column("modifiedby", "lookup", targets=("systemusers",), readonly=True),
    Column("versionnumber", "int", readonly=True),  # the row version behind @odata.etag
)


def _schema(entity_set: str, logical: str, pk: str, name: str, cols: list[Column]) -> EntitySchema:
    schema = EntitySchema(entity_set, logical, pk, name)
    schema.add(Column(pk, "guid"))
    for col in [*cols, *_AUDIT]:
        schema.add(col)
    return schema


def build_schemas() -> dict[str, EntitySchema]:
    """Fresh schemas (each simulator owns a copy: custom choice columns are added to it)."""
    incident = _schema(
        "incidents",
        "incident",
        "incidentid",
        "title",
        [
            Column("title", "string", 200),
            Column("description", "memo", 2000),
            Column("ticketnumber", "string", 100, readonly=True),
            Column("msdyn_copilotengaged", "bool"),
            Column("ownerid", "lookup", targets=("systemusers",)),
            Column("primarycontactid", "lookup", targets=("contacts",)),
        ]
        + [Column(c, "choice") for c in DEFAULT_CHOICES],
    )
    incident.add(Column("subjectid", "lookup", targets=("subjects",)))
    incident.add(
        Column("customerid", "lookup", targets=("accounts", "contacts")),
        navs=("customerid_account", "customerid_contact"),
    )
    annotation = _schema(
        "annotations",
        "annotation",
        "annotationid",
        "subject",
        [
            Column("subject", "string", 500),
            Column("notetext", "memo", 100_000),
            Column("objecttypecode", "string", 100, readonly=True),
            Column("isdocument", "bool"),
        ],
    )
    annotation.add(
        Column("objectid", "lookup", targets=("incidents",)), navs=("objectid_incident",)
    )
    email = _schema(
        "emails",
        "email",
        "activityid",
        "subject",
        [
            Column("subject", "string", 400),
            Column("description", "memo", 1_048_576),
            Column("sender", "string", 250),
            Column("directioncode", "bool"),
        ],
    )
    email.add(
        Column("regardingobjectid", "lookup", targets=("incidents",)),
        navs=("regardingobjectid_incident",),
    )
    subject = _schema("subjects", "subject", "subjectid", "title", [Column("title", "string", 500)])
    subject.add(Column("parentsubject", "lookup", targets=("subjects",)))
    return {s.entity_set: s for s in (incident, annotation, email, subject)}


DEFAULT_CHOICES: dict[str, dict[int, str]] = {
    "prioritycode": {1: "High", 2: "Normal", 3: "Low"},
    "severitycode": {1: "Default Value"},
    "casetypecode": {1: "Question", 2: "Problem", 3: "Request"},
    "caseorigincode": {
        1: "Phone", 2: "Email", 3: "Web", 2483: "Facebook", 3986: "Twitter", 700610000: "IoT",
    },
    "contractservicelevelcode": {1: "Gold", 2: "Silver", 3: "Bronze"},
    "customersatisfactioncode": {
        1: "Very Dissatisfied", 2: "Dissatisfied", 3: "Neutral", 4: "Satisfied",
        5: "Very Satisfied",
    },
    "statecode": {0: "Active", 1: "Resolved", 2: "Cancelled"},
    "statuscode": {
        1: "In Progress", 2: "On Hold", 3: "Waiting for Details", 4: "Researching",
        5: "Problem Solved", 1000: "Information Provided", 6: "Cancelled", 2000: "Merged",
    },
}  # fmt: skip

# statuscode -> statecode it belongs to; statecode -> its default statuscode.
STATUS_STATE = {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 1000: 1, 6: 2, 2000: 2}
DEFAULT_STATUS = {0: 1, 1: 5, 2: 6}

SCHEMAS = build_schemas()


def check_value(schema: EntitySchema, col: Column, value: Any, choices: dict[int, str]) -> None:
    """Refuse a value the column cannot hold (type, length, choice range) with a 400."""
    where = f"'{col.name}' attribute of the '{schema.logical_name}' entity"
    if value is None:
        return
    if col.type in ("string", "memo"):
        if not isinstance(value, str):
            raise ValidationError(400, "0x80048d19", f"Cannot convert the literal to {where}.")
        if len(value) > col.max_length:
            raise ValidationError(
                400,
                "0x80044331",
                f"A validation error occurred.  The length of the {where} exceeded the "
                f"maximum allowed length of '{col.max_length}'.",
            )
    elif col.type == "choice":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationError(
                400, "0x80048d19", f"Cannot convert a value to target type 'Edm.Int32' for {where}."
            )
        if value not in choices:
            accepted = ",".join(str(v) for v in sorted(choices))
            raise ValidationError(
                400,
                "0x8004431a",
                f"A validation error occurred. The value {value} of '{col.name}' on record of "
                f"type '{schema.logical_name}' is outside the valid range. "
                f"Accepted Values: {accepted}",
            )
    elif col.type == "bool" and not isinstance(value, bool):
        raise ValidationError(
            400, "0x80048d19", f"Cannot convert a value to Edm.Boolean for {where}."
        )
    elif col.type == "datetime":
        try:
            parse_datetime(value)
        except (TypeError, ValueError):
            raise ValidationError(
                400, "0x80048d19", f"Cannot convert a value to Edm.DateTimeOffset for {where}."
            ) from None
