"""A subset of ServiceNow's encoded query language (``sysparm_query``), evaluated in memory.

What the parser implements: conditions ``<field><operator><value>`` joined by ``^`` (AND), ``^OR``
and ``^NQ``, ``ORDERBY``/``ORDERBYDESC``, ``EQ``, and dot-walked field names
(``caller_id.user_name``) which a ``Schema`` resolves through reference fields.

What it refuses with ``UnsupportedQueryError`` (the simulator answers 400) instead of guessing:
every other keyword term (``JOIN``, ``RLQUERY``, ``SUBQUERY``, ``123TEXTQUERY321``, ``GOTO``,
``GROUPBY``, ...), operators it does not implement, ``javascript:`` values other than
``gs.dateGenerate``, terms it cannot read at all, and dot-walks through a field that is not a
reference (``Schema.target`` raises).

What it ignores, as the platform documents ("If part of the query is invalid, such as by
specifying an invalid field name, the instance ignores the invalid part", Table API GET): a
well-formed condition on a field name the table does not have, including the last name of a
dot-walk. With ``invalid_returns_no_rows`` (the ``glide.invalid_query.returns_no_rows`` system
property) such a query returns no rows instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

Record = Mapping[str, str]

_NAME = r"[a-z_][a-z0-9_]*"
_TERM = re.compile(rf"^({_NAME}(?:\.{_NAME})*)(.*)$", re.DOTALL)
# Longest operators first so "ISNOTEMPTY" is not read as "IS..." and "!=" not as "=".
_OPERATORS = (
    "ISNOTEMPTY", "ISEMPTY", "ANYTHING", "NOT LIKE", "NOT IN", "STARTSWITH", "ENDSWITH",
    "LIKE", "IN", "!=", ">=", "<=", "=", ">", "<",
)  # fmt: skip
# The one javascript: form our connector may send; the user's time zone is assumed to be UTC.
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('([\d-]+)',\s*'([\d:]+)'\)$")
_KEYWORD = re.compile(r"^[A-Z0-9]+")


class UnsupportedQueryError(ValueError):
    """A term the real instance would understand but this simulator does not implement."""


class Schema(Protocol):
    """Field names of the queried table, with dot-walking through reference fields."""

    def target(self, path: str) -> tuple[str, str] | None:
        """(table, field) that ``path`` names; None for an unknown name.

        Raises UnsupportedQueryError when ``path`` walks through a non-reference field.
        """
        ...

    def lookup(self, record: Record, path: str) -> str:
        """The raw value ``path`` reaches from ``record`` ("" through an empty reference)."""
        ...


@dataclass(frozen=True)
class Condition:
    """One ``<field><operator><value>`` term; ``field`` may be dot-walked."""

    field: str
    op: str
    value: str

    def holds(self, actual: str) -> bool:
        """Whether the field's raw value ``actual`` satisfies this condition."""
        return _OPS[self.op](actual, self.value)


@dataclass(frozen=True)
class EncodedQuery:
    """Parsed query: ^NQ groups of AND-ed clauses, each clause an OR of conditions."""

    groups: tuple[tuple[tuple[Condition, ...], ...], ...]
    order_by: tuple[tuple[str, bool], ...]  # (field, descending)

    def conditions(self) -> list[Condition]:
        """Every condition of the query, in order."""
        return [c for group in self.groups for clause in group for c in clause]

    def select(
        self, records: Iterable[Record], schema: Schema, *, invalid_returns_no_rows: bool = False
    ) -> list[Record]:
        """Matching records in ORDERBY order (first term is the primary key).

        Conditions on unknown field names are dropped, as ServiceNow does, unless
        ``invalid_returns_no_rows``: then such a query selects nothing. Raises
        UnsupportedQueryError for a dot-walk through a non-reference field (also in ORDERBY)
        before looking at any record.
        """
        known = {c.field: schema.target(c.field) is not None for c in self.conditions()}
        ordering = [(name, desc) for name, desc in self.order_by if schema.target(name)]
        if invalid_returns_no_rows and not all(known.values()):
            return []
        out = [
            r for r in records
            if any(_group_matches(group, r, schema, known) for group in self.groups)
        ]  # fmt: skip
        for name, desc in reversed(ordering):
            out.sort(key=_field_key(schema, name), reverse=desc)
        return out


def _group_matches(
    group: tuple[tuple[Condition, ...], ...],
    record: Record,
    schema: Schema,
    known: Mapping[str, bool],
) -> bool:
    for clause in group:
        valid = [c for c in clause if known[c.field]]
        if valid and not any(c.holds(schema.lookup(record, c.field)) for c in valid):
            return False
    return True


def parse(query: str) -> EncodedQuery:
    """Parse ``sysparm_query``; raises UnsupportedQueryError for anything not implemented."""
    groups: list[list[list[Condition]]] = [[]]
    order_by: list[tuple[str, bool]] = []
    for raw in query.split("^") if query else []:
        term = raw.strip()
        if term.startswith("NQ"):
            groups.append([])
            term = term[2:]
        if term in ("", "EQ"):
            continue
        if term.startswith("ORDERBYDESC"):
            order_by.append((_field_name(term[len("ORDERBYDESC") :], raw), True))
        elif term.startswith("ORDERBY"):
            order_by.append((_field_name(term[len("ORDERBY") :], raw), False))
        elif term.startswith("OR") and groups[-1]:
            groups[-1][-1].append(_parse_condition(term[2:]))
        else:
            groups[-1].append([_parse_condition(term.removeprefix("OR"))])
    frozen = tuple(tuple(tuple(c) for c in clauses) for clauses in groups)
    return EncodedQuery(groups=frozen, order_by=tuple(order_by))


def _field_name(name: str, term: str) -> str:
    m = _TERM.match(name)
    if m is None or m.group(2):
        raise UnsupportedQueryError(f"simulator cannot read query term {term!r}")
    return name


def _parse_condition(term: str) -> Condition:
    m = _TERM.match(term)
    if m is None:
        keyword = _KEYWORD.match(term)
        if keyword is not None:
            raise UnsupportedQueryError(
                f"simulator does not implement the {keyword.group(0)} query term {term!r}"
            )
        raise UnsupportedQueryError(f"simulator cannot read query term {term!r}")
    field, rest = m.groups()
    for op in _OPERATORS:
        if rest.startswith(op):
            return Condition(field, op, _literal(rest[len(op) :]))
    raise UnsupportedQueryError(f"simulator does not support query term {term!r}")


def _literal(value: str) -> str:
    m = _DATE_GENERATE.match(value)
    if m:
        return f"{m.group(1)} {m.group(2)}"
    if value.startswith("javascript:"):
        raise UnsupportedQueryError(f"simulator does not evaluate {value!r}")
    return value


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _compare(actual: str, expected: str) -> int | None:
    """-1/0/1 comparison, numeric when both sides are numbers; None when the field is empty."""
    if actual == "":
        return None  # SQL semantics: NULL is neither greater nor smaller than anything
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (actual > expected) - (actual < expected)


def _sort_key(value: str) -> tuple[int, float, str]:
    num = _number(value)
    return (0, num, "") if num is not None else (1, 0.0, value.lower())


def _field_key(schema: Schema, name: str) -> Callable[[Record], tuple[int, float, str]]:
    return lambda record: _sort_key(schema.lookup(record, name))


def _cmp(pred: Callable[[int], bool]) -> Callable[[str, str], bool]:
    def check(actual: str, expected: str) -> bool:
        c = _compare(actual, expected)
        return c is not None and pred(c)

    return check


_OPS: dict[str, Callable[[str, str], bool]] = {
    "=": lambda a, v: a == v,
    "!=": lambda a, v: a != v,
    "ISEMPTY": lambda a, v: a == "",
    "ISNOTEMPTY": lambda a, v: a != "",
    "ANYTHING": lambda a, v: True,
    "IN": lambda a, v: a in v.split(","),
    "NOT IN": lambda a, v: a not in v.split(","),
    "LIKE": lambda a, v: v.lower() in a.lower(),
    "NOT LIKE": lambda a, v: v.lower() not in a.lower(),
    "STARTSWITH": lambda a, v: a.lower().startswith(v.lower()),
    "ENDSWITH": lambda a, v: a.lower().endswith(v.lower()),
    "<": _cmp(lambda c: c < 0),
    "<=": _cmp(lambda c: c <= 0),
    ">": _cmp(lambda c: c > 0),
    ">=": _cmp(lambda c: c >= 0),
}
