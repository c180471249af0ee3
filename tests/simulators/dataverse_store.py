"""Records of the Dataverse simulator: validated writes, row versions, undo, rendering.

A write takes a Web API JSON body (columns and ``<nav>@odata.bind``), refuses what the
platform refuses (unknown or read-only properties, choice values outside the option set,
strings too long, an update of a resolved/cancelled case, resolving a case by PATCH) and
stamps ``modifiedon``, ``_modifiedby_value`` and a new ``versionnumber`` (the etag). Writes
can note undo entries so a ``$batch`` change set is rolled back as a whole.
"""

from __future__ import annotations

import itertools
import re
import secrets
import string
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from tests.simulators import Clock
from tests.simulators.dataverse_schema import (
    DEFAULT_CHOICES,
    DEFAULT_STATUS,
    STATUS_STATE,
    Column,
    EntitySchema,
    ValidationError,
    build_schemas,
    check_value,
    format_datetime,
    parse_datetime,
)

__all__ = ["Store", "Undo"]

Undo = list[tuple[str, str, dict[str, Any] | None]]  # (entity set, id, previous record)
_BIND = re.compile(r"^(?:.*/)?(\w+)\(([0-9a-fA-F-]{36})\)$")
_NO_PROPERTY = (
    "The property '{}' does not exist on type 'Microsoft.Dynamics.CRM.{}'. Make sure to only "
    "use property names that are defined by the type or mark the type as open type."
)


def _bad(message: str, code: str = "0x80060888") -> ValidationError:
    return ValidationError(400, code, message)


class Store:
    """In-memory tables keyed by entity set, then by lower-case GUID."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.schemas: dict[str, EntitySchema] = build_schemas()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in self.schemas}
        self.choices: dict[str, dict[int, str]] = {k: dict(v) for k, v in DEFAULT_CHOICES.items()}
        self.require_customer = True
        self._versions = itertools.count(1_000_001)
        self._tickets = itertools.count(1001)

    def set_choices(self, column: str, options: Mapping[int, str]) -> None:
        """Replace (or add, as a custom incident choice column) the options of ``column``."""
        with self.lock:
            self.choices[column] = dict(options)
            schema = self.schemas["incidents"]
            if column not in schema.columns:
                schema.add(Column(column, "choice"))

    # ---- writes ------------------------------------------------------------------------------

    def write(
        self,
        entity_set: str,
        rid: str | None,
        body: Mapping[str, Any],
        user: str,
        *,
        undo: Undo | None = None,
        validate: bool = True,
    ) -> tuple[dict[str, Any], bool]:
        """Create (``rid`` None or unknown) or update; returns (stored record, created)."""
        schema = self.schemas[entity_set]
        values, targets = self._values(schema, body, validate)
        if rid is None:
            rid = str(values.pop(schema.primary_key, None) or uuid.uuid4()).lower()
        elif values.pop(schema.primary_key, rid).lower() != rid:
            raise _bad("The primary key in the body does not match the URL.", "0x80040203")
        with self.lock:
            old = self.tables[entity_set].get(rid)
            if validate and entity_set == "incidents":
                self._check_case(old, values)
            rec = dict(old) if old is not None else self._new(schema, rid, user, values, validate)
            rec.update(values)
            rec.update({f"{a}@target": t for a, t in targets.items()})
            if entity_set == "incidents" and "statecode" in values and "statuscode" not in values:
                rec["statuscode"] = DEFAULT_STATUS[values["statecode"]]
            if entity_set == "annotations" and rec.get("_objectid_value"):
                rec["objecttypecode"] = "incident"
            rec["modifiedon"] = values.get("modifiedon") or format_datetime(self.clock.now())
            rec["_modifiedby_value"] = values.get("_modifiedby_value") or user
            rec["versionnumber"] = next(self._versions)
            if undo is not None:
                undo.append((entity_set, rid, old))
            self.tables[entity_set][rid] = rec
            return dict(rec), old is None

    def rollback(self, undo: Undo) -> None:
        """Restore every record an undo list touched, newest first."""
        with self.lock:
            for entity_set, rid, old in reversed(undo):
                if old is None:
                    self.tables[entity_set].pop(rid, None)
                else:
                    self.tables[entity_set][rid] = old

    def _new(
        self, schema: EntitySchema, rid: str, user: str, values: Mapping[str, Any], validate: bool
    ) -> dict[str, Any]:
        now = format_datetime(self.clock.now())
        rec: dict[str, Any] = dict.fromkeys(schema.columns)
        rec.update({schema.primary_key: rid, "createdon": now, "_createdby_value": user})
        if schema.entity_set == "incidents":
            if validate and self.require_customer and "_customerid_value" not in values:
                raise _bad("You should specify a parent contact or account.", "0x80040203")
            if validate and values.get("statecode", 0) != 0:
                raise _bad("A case can only be created in the Active state.", "0x80040203")
            suffix = "".join(
                secrets.choice(string.ascii_uppercase + string.digits) for _ in "123456"
            )
            rec.update(
                ticketnumber=f"CAS-{next(self._tickets):05d}-{suffix}",
                prioritycode=2, severitycode=1, statecode=0, statuscode=1,
                _ownerid_value=user, msdyn_copilotengaged=False,
            )  # fmt: skip
        return rec

    def _values(
        self, schema: EntitySchema, body: Mapping[str, Any], validate: bool
    ) -> tuple[dict[str, Any], dict[str, str]]:
        values: dict[str, Any] = {}
        targets: dict[str, str] = {}
        for key, value in body.items():
            if key == "@odata.type":
                continue
            if key.endswith("@odata.bind"):
                col = schema.binds.get(key.removesuffix("@odata.bind"))
                if col is None:
                    raise _bad(
                        _NO_PROPERTY.format(key.removesuffix("@odata.bind"), schema.logical_name)
                    )
                values[col.attribute], target = self._bind(col, key, value)
                if target:
                    targets[col.attribute] = target
                continue
            col = schema.columns.get(key)
            if validate and (col is None or col.type == "lookup"):
                raise _bad(_NO_PROPERTY.format(key, schema.logical_name))
            if validate and col is not None and col.readonly:
                raise _bad(f"The '{key}' attribute cannot be set: it is read-only.", "0x80040203")
            if validate and col is not None:
                check_value(schema, col, value, self.choices.get(key, {}))
            if col is not None and col.type in ("guid", "lookup") and isinstance(value, str):
                value = value.lower()
            if col is not None and col.type == "datetime" and isinstance(value, str):
                value = format_datetime(parse_datetime(value).timestamp())
            values[key] = value
        return values, targets

    def _bind(self, col: Column, key: str, value: Any) -> tuple[str | None, str]:
        if value is None:
            return None, ""
        m = _BIND.match(value) if isinstance(value, str) else None
        if m is None:
            raise _bad(f"The value of '{key}' must be a URI like /subjects(<guid>).")
        entity_set, rid = m.group(1), m.group(2).lower()
        if entity_set not in col.targets:
            raise _bad(f"'{key}' cannot refer to the entity set '{entity_set}'.")
        nav = key.removesuffix("@odata.bind")
        if nav != col.name and nav.removeprefix(f"{col.name}_") != entity_set.removesuffix("s"):
            raise _bad(f"'{key}' cannot refer to the entity set '{entity_set}'.")
        if entity_set in self.tables and rid not in self.tables[entity_set]:
            logical = self.schemas[entity_set].logical_name
            raise ValidationError(404, "0x80040217", f"{logical} With Id = {rid} Does Not Exist")
        return rid, entity_set

    def _check_case(self, old: dict[str, Any] | None, values: dict[str, Any]) -> None:
        status = values.get("statuscode")
        state = values.get("statecode", STATUS_STATE.get(status) if status is not None else None)
        if status is not None and STATUS_STATE.get(status) != state:
            raise _bad(
                f"{status} is not a valid status code for state code IncidentState.{state}",
                "0x80040203",
            )
        if status is not None:
            values.setdefault("statecode", state)
        if old is None:
            return
        if old.get("statecode", 0) != 0 and state != 0:
            word = "resolved" if old["statecode"] == 1 else "cancelled"
            raise _bad(
                f"This case has already been {word}. Close and reopen the case, and then try "
                "again.",
                "0x80040203",
            )
        if state == 1 and old.get("statecode") != 1:
            raise _bad(
                "This message can not be used to set the state of Case to Resolved. In order to "
                "set state of Case to Resolved, use the CloseIncidentRequest message instead.",
                "0x80040203",
            )

    # ---- reads -------------------------------------------------------------------------------

    def render(
        self,
        entity_set: str,
        rec: Mapping[str, Any],
        select: list[str] | None,
        annotate: Callable[[str], bool],
    ) -> dict[str, Any]:
        """The record as the Web API returns it (etag, selected columns, annotations)."""
        schema = self.schemas[entity_set]
        out: dict[str, Any] = {"@odata.etag": f'W/"{rec["versionnumber"]}"'}
        names = list(select or schema.columns)
        if schema.primary_key not in names:
            names.append(schema.primary_key)  # always returned, as the platform does
        for attr in names:
            col, value = schema.columns[attr], rec.get(attr)
            if value is not None:
                out.update(self._annotations(col, rec, value, annotate))
            out[attr] = value
        return out

    def _annotations(
        self, col: Column, rec: Mapping[str, Any], value: Any, annotate: Callable[[str], bool]
    ) -> dict[str, Any]:
        attr, out = col.attribute, {}
        formatted = annotate("OData.Community.Display.V1.FormattedValue")
        label: str | None = None
        if col.type == "choice":
            label = self.choices.get(col.name, {}).get(value)
        elif col.type == "bool":
            label = "Yes" if value else "No"
        elif col.type == "datetime":
            d = parse_datetime(value).astimezone(UTC)
            label = f"{d.month}/{d.day}/{d.year} {datetime.strftime(d, '%I:%M %p').lstrip('0')}"
        elif col.type == "lookup":
            target = rec.get(f"{attr}@target", col.targets[0])
            row = self.tables.get(target, {}).get(value)
            if row is not None:
                label = row.get(self.schemas[target].primary_name)
            if annotate("Microsoft.Dynamics.CRM.lookuplogicalname"):
                out[f"{attr}@Microsoft.Dynamics.CRM.lookuplogicalname"] = (
                    self.schemas[target].logical_name if target in self.schemas else target[:-1]
                )
            if annotate("Microsoft.Dynamics.CRM.associatednavigationproperty"):
                out[f"{attr}@Microsoft.Dynamics.CRM.associatednavigationproperty"] = col.name
        if formatted and label is not None:
            out[f"{attr}@OData.Community.Display.V1.FormattedValue"] = label
        return out
