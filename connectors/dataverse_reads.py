"""Dataverse reads beside record I/O: notes on a record, a case's first e-mail, subjects, choices.

``DataverseLookups`` is a mixin of ``connectors.dataverse.DataverseConnector``: its methods send
their GETs through the connector's ``HttpClient`` (same token, pacing and retries) and page
through the connector's own ``iter_records``. The webhook registration calls are in
``connectors.dataverse_admin``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from connectors import _odata as od
from connectors._http import HttpClient
from connectors.base import SourceRecord
from domain.errors import RejectedError

__all__ = ["DataverseLookups"]


class _Reader(Protocol):
    _base: str
    _http: HttpClient

    def iter_records(
        self,
        table: str,
        query: str,
        fields: Sequence[str],
        *,
        page_size: int | None = None,
        order_by: str | None = None,
    ) -> Iterator[SourceRecord]: ...


class DataverseLookups:
    """Annotation, e-mail, subject and picklist reads on top of the connector's client."""

    def has_note(
        self: _Reader, table: str, record_id: str, marker: str, *, element: str = od.NOTE_FIELD
    ) -> bool:
        """Whether an annotation on the record contains ``marker`` (``element`` is unused)."""
        record_id = od.check_guid(record_id)
        od.entity_set(table)
        if not od.NOTE_MARKER_RE.fullmatch(marker):
            raise RejectedError("invalid note marker", system=od.SYSTEM)
        query = {
            "$filter": f"_objectid_value eq {record_id} and contains(notetext,'{marker}')",
            "$select": "annotationid",
            "$top": "1",
        }
        url = f"{self._base}{od.API}/annotations?{od.query(query)}"
        rows = od.rows(od.json(self._http.request("GET", url, headers=od.READ_HEADERS)))
        return bool(rows)

    def first_email_text(self: _Reader, case_id: str) -> str | None:
        """The HTML ``description`` of the earliest e-mail activity regarding the case, if any."""
        query = {
            "$filter": f"_regardingobjectid_value eq {od.check_guid(case_id)}",
            "$orderby": "createdon asc",
            "$select": "description,subject",
            "$top": "1",
        }
        url = f"{self._base}{od.API}/emails?{od.query(query)}"
        rows = od.rows(od.json(self._http.request("GET", url, headers=od.READ_HEADERS)))
        text = rows[0].get("description") if rows else None
        return text if isinstance(text, str) and text else None

    def list_subjects(self: _Reader) -> list[dict[str, str]]:
        """The Subject tree: ``subjectid``, ``title``, ``_parentsubject_value`` (or "")."""
        rows = self.iter_records(
            "subject", "", ["title", "_parentsubject_value"], order_by="title asc,subjectid asc"
        )
        return [
            {k: str(r.fields.get(k) or "") for k in ("subjectid", "title", "_parentsubject_value")}
            for r in rows
        ]

    def list_choices(
        self: _Reader, columns: Sequence[str], *, table: str = "incident"
    ) -> list[dict[str, str]]:
        """Options of the picklist ``columns``: ``element``, ``value`` (int as text), ``label``."""
        od.entity_set(table)
        wanted = {od.check_field(c) for c in columns}
        url = (
            f"{self._base}{od.API}/EntityDefinitions(LogicalName='{table}')/Attributes/"
            "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
            "?$select=LogicalName&$expand=OptionSet($select=Options)"
        )
        found: list[dict[str, str]] = []
        for attribute in od.rows(od.json(self._http.request("GET", url, headers=od.READ_HEADERS))):
            name = attribute.get("LogicalName")
            if name not in wanted:
                continue
            option_set = attribute.get("OptionSet") or {}
            for option in option_set.get("Options") or []:
                label = ((option.get("Label") or {}).get("UserLocalizedLabel") or {}).get("Label")
                found.append(
                    {
                        "element": str(name),
                        "value": str(option.get("Value")),
                        "label": str(label or ""),
                    }
                )
        return found
