"""OData query options of the Dataverse simulator: ``$select``, ``$filter``, ``$orderby``.

The ``$filter`` subset: ``eq ne gt ge lt le``, ``and``/``or``, parentheses, ``contains``,
``startswith``, ``endswith``; literals ``null``, ``true``/``false``, ints, ``'strings'`` (``''``
escapes a quote), bare GUIDs and ISO datetimes. Anything else raises ODataError, which the
simulator answers with 400 ``0x80060888`` rather than silently matching every row. String
comparisons are case-insensitive, as the platform's SQL collation is; a null column never
matches an ordering comparison.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from tests.simulators.dataverse_schema import (
    Column,
    EntitySchema,
    ValidationError,
    parse_datetime,
)

__all__ = ["ODataError", "Predicate", "parse_filter", "parse_orderby", "parse_select", "sort_rows"]

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])|(?P<dt>\d{4}-\d{2}-\d{2}(?:T[\d:.]+"
    r"(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w:])|(?P<num>-?\d+(?:\.\d+)?)(?![\w.])|(?P<name>[A-Za-z_]"
    r"[\w.]*)|(?P<punct>[(),]))"
)
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}  # fmt: skip
_FUNCS = {"contains", "startswith", "endswith"}


class ODataError(ValidationError):
    """A query option the simulator refuses (400, 0x80060888)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "0x80060888", message)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ODataError(f"Syntax error at position {pos} in '{text[:200]}'.")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, schema: EntitySchema, text: str) -> None:
        self.schema = schema
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok[0] == "end" or (value is not None and tok[1] != value):
            raise ODataError(f"Syntax error: expected '{value or 'a term'}' near '{tok[1]}'.")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        pred = self.or_expr()
        if self.peek()[0] != "end":
            raise ODataError(f"Syntax error: unexpected '{self.peek()[1]}'.")
        return pred

    def or_expr(self) -> Predicate:
        terms = [self.and_expr()]
        while self.peek() == ("name", "or"):
            self.take()
            terms.append(self.and_expr())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def and_expr(self) -> Predicate:
        terms = [self.primary()]
        while self.peek() == ("name", "and"):
            self.take()
            terms.append(self.primary())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def primary(self) -> Predicate:
        kind, value = self.take()
        if (kind, value) == ("punct", "("):
            pred = self.or_expr()
            self.take(")")
            return pred
        if (kind, value) == ("name", "not"):
            raise ODataError("The 'not' operator is not supported by this simulator.")
        if kind != "name":
            raise ODataError(f"The left side of a comparison must be a property, not '{value}'.")
        if self.peek() == ("punct", "("):
            return self.function(value)
        col = self.schema.column(value)
        op = self.take()[1]
        if op not in _COMPARE:
            raise ODataError(f"The operator '{op}' is not supported.")
        return _comparison(col, op, self.literal(col))

    def function(self, name: str) -> Predicate:
        if name not in _FUNCS:
            raise ODataError(f"An unknown function with name '{name}' was found.")
        self.take("(")
        col = self.schema.column(self.take()[1])
        self.take(",")
        kind, raw = self.take()
        self.take(")")
        if col.type not in ("string", "memo") or kind != "str":
            raise ODataError(f"'{name}' needs a string column and a string literal.")
        needle = raw[1:-1].replace("''", "'").lower()
        test: Callable[[str], bool] = {
            "contains": lambda s: needle in s,
            "startswith": lambda s: s.startswith(needle),
            "endswith": lambda s: s.endswith(needle),
        }[name]
        return lambda r: isinstance(r.get(col.attribute), str) and test(r[col.attribute].lower())

    def literal(self, col: Column) -> Any:
        kind, raw = self.take()
        if (kind, raw) == ("name", "null"):
            return None
        expected = {
            "string": "str", "memo": "str", "choice": "num", "int": "num", "bool": "name",
            "lookup": "guid", "guid": "guid", "datetime": "dt",
        }[col.type]  # fmt: skip
        if kind != expected or (kind == "name" and raw not in ("true", "false")):
            raise ODataError(f"A binary operator with incompatible types was detected: '{raw}'.")
        if kind == "str":
            return raw[1:-1].replace("''", "'").lower()
        if kind == "num":
            if "." in raw:
                raise ODataError(f"'{raw}' is not an integer.")
            return int(raw)
        if kind == "name":
            return raw == "true"
        if kind == "guid":
            return raw.lower()
        try:
            return parse_datetime(raw)
        except ValueError:
            raise ODataError(f"'{raw}' is not a valid DateTimeOffset.") from None


def _norm(col: Column, value: Any) -> Any:
    if value is None:
        return None
    if col.type == "datetime":
        return parse_datetime(value)
    return value.lower() if isinstance(value, str) else value


def _comparison(col: Column, op: str, lit: Any) -> Predicate:
    if lit is None and op not in ("eq", "ne"):
        raise ODataError(f"The operator '{op}' cannot compare with null.")
    if col.type in ("bool", "lookup", "guid") and op not in ("eq", "ne"):
        raise ODataError(f"The operator '{op}' is not supported for '{col.attribute}'.")

    def pred(row: dict[str, Any]) -> bool:
        value = _norm(col, row.get(col.attribute))
        if op in ("eq", "ne"):
            return bool(value == lit) == (op == "eq")
        if value is None:
            return False
        return bool(_ORDERING[op](value, lit))

    return pred


def parse_filter(schema: EntitySchema, text: str) -> Predicate:
    """Compile a ``$filter`` expression against ``schema``; refuses what is not implemented."""
    if not text.strip():
        raise ODataError("The $filter expression is empty.")
    return _Parser(schema, text).parse()


def parse_select(schema: EntitySchema, text: str | None) -> list[str] | None:
    """Attribute names of ``$select`` (None: all columns); unknown names raise ODataError."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    for name in names:
        if not name:
            raise ODataError("The $select expression has an empty item.")
        schema.column(name)
    return names


def parse_orderby(schema: EntitySchema, text: str) -> list[tuple[Column, bool]]:
    """``field [asc|desc], ...`` as (column, descending) pairs."""
    out: list[tuple[Column, bool]] = []
    for item in text.split(","):
        words = item.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ODataError(f"Syntax error in $orderby near '{item.strip()[:100]}'.")
        out.append((schema.column(words[0]), len(words) == 2 and words[1] == "desc"))
    return out


def sort_rows(
    rows: Iterable[dict[str, Any]], order: list[tuple[Column, bool]], pk: str
) -> list[dict[str, Any]]:
    """Sort like SQL Server: nulls first ascending, last descending; primary key breaks ties."""
    result = sorted(rows, key=lambda r: str(r[pk]))
    for col, desc in reversed(order):

        def key(row: dict[str, Any], col: Column = col) -> tuple[int, Any]:
            value = _norm(col, row.get(col.attribute))
            return (0, datetime.min) if value is None else (1, value)

        result.sort(key=key, reverse=desc)
    return result
