"""Repairing a race ServiceNow's Table API cannot prevent: a person's edit we overwrote.

The Table API has no If-Match, so a person saving a ticket between our read and our PATCH is
overwritten. After the fact, the connector reports the values our update replaced
(``Connector.overwritten``: ``sys_mod_count``, then ``sys_audit``); this module puts a person's
value back with a note saying so, once per repaired update (the repair is claimed), and never
over a later correction. Platforms with conditional writes (Dataverse) report nothing here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connectors.base import Connector, SourceRecord
from connectors.state import ClaimStore
from domain.errors import ConnectorError, ThrottledError, UnavailableError
from domain.mapping import FieldMapping
from domain.sanitize import sanitize_note

__all__ = ["RaceRepair", "may_have_landed"]

log = logging.getLogger(__name__)


@dataclass
class RaceRepair:
    """Restores values a person set between our read and our write."""

    connector: Connector
    mapping: FieldMapping
    claims: ClaimStore
    lease_s: float
    settle_s: float

    def restore(
        self,
        record: SourceRecord,
        marker: str,
        *,
        current: SourceRecord,
        read: SourceRecord | None = None,
    ) -> str:
        """Put back what a person set between our read and our write; '' when nothing was.

        ``current`` is the record as it is now (our update's answer, or a fresh read); a field
        is restored only while it still holds our value, so a later correction stands.
        """
        note_field = self.mapping.note_field
        try:
            theirs = self.connector.overwritten(
                record.table,
                record.record_id,
                written=current,
                marker=marker,
                element=note_field,
                read=read,
            )
        except ConnectorError as exc:
            log.warning("could not check %s for concurrent edits: %s", record.record_id, exc)
            return ""
        canonical = {platform: name for name, platform in self.mapping.fields.items()}
        restore = {
            f: old
            for f, (old, ours) in theirs.items()
            if f in canonical
            and self.mapping.writes(canonical[f])
            and not self.mapping.is_unset(canonical[f], old)
            and str(current.fields.get(f, ours)) == ours
        }
        if not restore:
            return ""
        names = ", ".join(canonical[f] for f in sorted(restore))
        # Two workers may find the same clobber (a duplicate job on the loop-guard path): the
        # update being repaired is claimed, so one restore and one note are written.
        key = f"{record.system}:{record.table}:{record.record_id}:restore:{_count(current)}"
        claim = self.claims.claim(key, lease_s=self.lease_s)
        if claim.state != "acquired":
            return f"a person's value is being restored: {names}"
        note = sanitize_note(
            f"{self.mapping.note_prefix} Someone set {names} while this ticket was being filled "
            "automatically; their value is kept and the automatic value withdrawn."
        )
        try:
            self.connector.update(record.table, record.record_id, {**restore, note_field: note})
        except BaseException as exc:
            if may_have_landed(exc):
                self.claims.hold(claim, self.settle_s)
            else:
                self.claims.release(claim)
            raise
        self.claims.complete(claim, "restored")
        log.warning("restored %s on %s %s", sorted(restore), record.system, record.record_id)
        return f"a person's value restored: {names}"


def may_have_landed(exc: BaseException) -> bool:
    """False for failures that prove the platform did not apply the write.

    Every ``ConnectorError`` but ``UnavailableError`` is an answer refusing the request (4xx,
    auth) or a request we refused to send; 429 is refused before processing.
    """
    if isinstance(exc, ThrottledError):
        return False
    return isinstance(exc, UnavailableError) or not isinstance(exc, ConnectorError)


def _count(record: SourceRecord) -> str:
    """The record's update count as a key part (ServiceNow sys_mod_count; else its etag)."""
    value = record.fields.get("sys_mod_count", record.etag)
    return "".join(c for c in str(value) if c.isalnum())[:40]
