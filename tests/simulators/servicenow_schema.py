"""Tables, fields and reference fields of the ServiceNow simulator, and dot-walking over them.

Sources: ../shared/docs/servicenow.md §9-10 for incident fields and choices; sys_audit columns
from the platform docs ("Viewing Sys Audit and Audit Relationship Change tables",
platform-security/c_UnderstandingTheSysAuditTable) and turbot/steampipe-plugin-servicenow
``table_servicenow_sys_audit.go`` (documentkey, fieldname, internal_checkpoint, newvalue, oldvalue,
reason, record_checkpoint, tablename, user).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tests.simulators.encoded_query import Record, UnsupportedQueryError

__all__ = [
    "AUDITED_TABLES",
    "AUTO_FIELDS",
    "DEFAULTS",
    "DEFAULT_PRIORITY_MATRIX",
    "DEPENDS_ON",
    "JOURNAL_FIELDS",
    "OOB_CHOICES",
    "OOB_SUBCATEGORIES",
    "REFERENCES",
    "SYS_FIELDS",
    "TABLE_FIELDS",
    "TableSchema",
]

DEFAULT_PRIORITY_MATRIX: dict[tuple[str, str], str] = {  # (impact, urgency) -> priority
    ("1", "1"): "1", ("1", "2"): "2", ("1", "3"): "3",
    ("2", "1"): "2", ("2", "2"): "3", ("2", "3"): "4",
    ("3", "1"): "3", ("3", "2"): "4", ("3", "3"): "5",
}  # fmt: skip
AUTO_FIELDS = ("sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by",
               "sys_mod_count")  # fmt: skip
SYS_FIELDS = ("sys_id", *AUTO_FIELDS)
TABLE_FIELDS: dict[str, tuple[str, ...]] = {
    "incident": (*SYS_FIELDS, "number", "short_description", "description", "category",
                 "subcategory", "impact", "urgency", "priority", "state", "active", "caller_id",
                 "opened_by", "opened_at", "assignment_group", "assigned_to", "correlation_id",
                 "correlation_display", "work_notes", "comments", "sys_class_name"),
    "sys_choice": (*SYS_FIELDS, "name", "element", "value", "label", "dependent_value",
                   "language", "inactive", "sequence"),
    "sys_journal_field": (*SYS_FIELDS, "element_id", "element", "name", "value"),
    "sys_user": (*SYS_FIELDS, "user_name", "name", "email", "active", "manager"),
    "sys_user_group": (*SYS_FIELDS, "name", "description", "active", "manager"),
    # documentkey is a plain sys_id string (a "document id"), not a reference field.
    "sys_audit": (*SYS_FIELDS, "tablename", "fieldname", "documentkey", "oldvalue", "newvalue",
                  "user", "record_checkpoint", "internal_checkpoint", "reason"),
}  # fmt: skip
DEFAULTS: dict[str, dict[str, str]] = {
    "incident": {"category": "inquiry", "impact": "3", "urgency": "3", "state": "1",
                 "active": "true", "sys_class_name": "incident"},
    "sys_choice": {"language": "en", "inactive": "false"},
}  # fmt: skip
# table -> reference field -> referenced table; the only fields a query may dot-walk through.
REFERENCES: dict[str, dict[str, str]] = {
    "incident": {"caller_id": "sys_user", "opened_by": "sys_user", "assigned_to": "sys_user",
                 "assignment_group": "sys_user_group"},
    "sys_user": {"manager": "sys_user"},
    "sys_user_group": {"manager": "sys_user"},
}  # fmt: skip
AUDITED_TABLES = ("incident",)  # the tables whose writes go to sys_audit
DEPENDS_ON = {"subcategory": "category"}  # dependent choice lists
JOURNAL_FIELDS = ("work_notes", "comments")
OOB_CHOICES = {  # element -> "value=label" pairs of the out-of-box incident choice lists
    "impact": "1=1 - High,2=2 - Medium,3=3 - Low",
    "urgency": "1=1 - High,2=2 - Medium,3=3 - Low",
    "priority": "1=1 - Critical,2=2 - High,3=3 - Moderate,4=4 - Low,5=5 - Planning",
    "state": "1=New,2=In Progress,3=On Hold,6=Resolved,7=Closed,8=Canceled",
    "category": "request=Request,inquiry=Inquiry / Help,software=Software,hardware=Hardware,"
    "network=Network,database=Database",
}
OOB_SUBCATEGORIES = {  # category -> "value=label" pairs (dependent choice list)
    "request": "password reset=Password Reset,password expired=Password Expired,"
    "account locked=Account Locked",
    "inquiry": "antivirus=Antivirus,email=Email,internal application=Internal Application",
    "software": "email=Email,os=Operating System",
    "hardware": "cpu=CPU,disk=Disk,keyboard=Keyboard,memory=Memory,monitor=Monitor,mouse=Mouse",
    "network": "dhcp=DHCP,dns=DNS,ip address=IP Address,vpn=VPN,wireless=Wireless",
    "database": "db2=DB2,sql server=MS SQL Server,oracle=Oracle",
}


class TableSchema:
    """Field names of one table, dot-walkable through ``REFERENCES`` (an encoded_query.Schema).

    ``fields`` and ``tables`` are the simulator's live structures; callers hold its lock.
    """

    def __init__(
        self,
        table: str,
        fields: Mapping[str, Sequence[str]],
        tables: Mapping[str, Mapping[str, Record]],
    ) -> None:
        self.table = table
        self._fields = fields
        self._tables = tables

    def target(self, path: str) -> tuple[str, str] | None:
        """(table, field) reached by ``path``, None for an unknown name on the way.

        Raises UnsupportedQueryError when ``path`` walks through a field that exists but is
        not a reference: a real instance would not match it, so the simulator refuses.
        """
        table, *walk = [self.table, *path.split(".")]
        leaf = walk.pop()
        for name in walk:
            if name not in self._fields.get(table, ()):
                return None
            target = REFERENCES.get(table, {}).get(name)
            if target is None:
                raise UnsupportedQueryError(
                    f"cannot dot-walk {path!r}: {table}.{name} is not a reference field"
                )
            table = target
        return (table, leaf) if leaf in self._fields.get(table, ()) else None

    def lookup(self, record: Record, path: str) -> str:
        """Raw value of ``path`` from ``record``; "" when a reference on the way is empty."""
        table, current = self.table, record
        *walk, leaf = path.split(".")
        for name in walk:
            table = REFERENCES[table][name]
            found = self._tables[table].get(current.get(name, ""))
            if found is None:
                return ""
            current = found
        return current.get(leaf, "")

    def referenced_table(self, table: str, field: str) -> str | None:
        """The table ``table.field`` references, or None for a plain field."""
        return REFERENCES.get(table, {}).get(field)
