"""A subset of ServiceNow's encoded query language (``sysparm_query``), evaluated in memory."""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass

Record = Mapping[str, str]

_TERM = re.compile(r"^([a-z_][a-z0-9_.]*)(.*)$", re.DOTALL)
# Longest operators first so "ISNOTEMPTY" is not read as "IS..." and "!=" not as "=".
_OPERATORS = (
    "ISNOTEMPTY", "ISEMPTY", "ANYTHING", "NOT LIKE", "NOT IN", "STARTSWITH", "ENDSWITH",
    "LIKE", "IN", "!=", ">=", "<=", "=", ">", "<",
)  # fmt: skip
# The one javascript: form our connector may send; the user's time zone is assumed to be UTC.
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('([\d-]+)',\s*'([\d:]+)'\)$")


class UnsupportedQueryError(ValueError):
    """A term the real instance would understand but this simulator does not implement."""


@dataclass(frozen=True)
class Condition:
    """One ``<field><operator><value>`` term."""

    field: str
    op: str
    value: str

    def test(self, record: Record) -> bool:
        """Whether ``record`` satisfies this condition."""
        return _OPS[self.op](record.get(self.field, ""), self.value)


@dataclass(frozen=True)
class EncodedQuery:
    """Parsed query: ^NQ groups of AND-ed clauses, each clause an OR of conditions."""

    groups: tuple[tuple[tuple[Condition, ...], ...], ...]
    order_by: tuple[tuple[str, bool], ...]  # (field, descending)

    def matches(self, record: Record, known: Container[str]) -> bool:
        """Evaluate, dropping conditions on unknown fields as ServiceNow does."""
        return any(_group_matches(group, record, known) for group in self.groups)

    def sort(self, records: Sequence[Record], known: Container[str]) -> list[Record]:
        """Apply the ORDERBY / ORDERBYDESC terms (first term is the primary key)."""
        out = list(records)
        for name, desc in reversed(self.order_by):
            if name in known:
                out.sort(key=_field_key(name), reverse=desc)
        return out


def _group_matches(
    group: tuple[tuple[Condition, ...], ...], record: Record, known: Container[str]
) -> bool:
    for clause in group:
        valid = [c for c in clause if c.field in known]
        if valid and not any(c.test(record) for c in valid):
            return False
    return True


def parse(query: str) -> EncodedQuery:
    """Parse ``sysparm_query``; raises UnsupportedQueryError for unimplemented operators."""
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
            order_by.append((term[len("ORDERBYDESC") :], True))
        elif term.startswith("ORDERBY"):
            order_by.append((term[len("ORDERBY") :], False))
        elif term.startswith("OR") and groups[-1]:
            _append(groups[-1][-1], term[2:])
        else:
            groups[-1].append([])
            _append(groups[-1][-1], term.removeprefix("OR"))
    frozen = tuple(tuple(tuple(c) for c in clauses) for clauses in groups)
    return EncodedQuery(groups=frozen, order_by=tuple(order_by))


def _append(clause: list[Condition], term: str) -> None:
    cond = _parse_condition(term)
    if cond is not None:
        clause.append(cond)


def _parse_condition(term: str) -> Condition | None:
    m = _TERM.match(term)
    if m is None:
        return None  # garbage: the instance ignores invalid parts of a query
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


def _field_key(name: str) -> Callable[[Record], tuple[int, float, str]]:
    return lambda record: _sort_key(record.get(name, ""))


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
