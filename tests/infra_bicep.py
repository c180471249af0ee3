"""A small reader of the Bicep in infra/ for tests/test_infra.py (no Bicep CLI, no pycep).

It understands what our templates use: ``param`` / ``var`` / ``resource`` / ``module`` /
``output`` declarations with decorators, object and array literals (newline or comma separated),
strings with ``${...}`` interpolation, and everything else as an ``Expr``: its source text plus
the object and array literals nested in it (so the two branches of ``c ? {...} : {...}``, the
body of ``if (...) {...}`` and of ``[for x in xs: {...}]`` stay reachable). It evaluates nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

INFRA = Path(__file__).resolve().parent.parent / "infra"


@dataclass(frozen=True)
class Expr:
    """An expression kept as source text, with the literals nested in it."""

    text: str
    parts: tuple[Value, ...] = ()

    def __str__(self) -> str:
        return self.text


Value: TypeAlias = str | int | bool | dict[str, "Value"] | list["Value"] | Expr | None


@dataclass
class Param:
    type: str
    default: Value
    has_default: bool
    decorators: list[str]

    @property
    def secure(self) -> bool:
        return any(d.startswith("secure(") for d in self.decorators)

    @property
    def allowed(self) -> list[str]:
        """The string values of an ``@allowed([...])`` decorator (empty without one)."""
        for d in self.decorators:
            if d.startswith("allowed("):
                return re.findall(r"'([^']*)'", d)
        return []


@dataclass
class Declared:
    """A resource (``kind`` is its type@api), module (its path) or output (its type)."""

    kind: str
    value: Value
    decorators: list[str] = field(default_factory=list)


@dataclass
class BicepFile:
    text: str
    params: dict[str, Param] = field(default_factory=dict)
    vars: dict[str, Value] = field(default_factory=dict)
    resources: dict[str, Declared] = field(default_factory=dict)
    modules: dict[str, Declared] = field(default_factory=dict)
    outputs: dict[str, Declared] = field(default_factory=dict)

    def resources_of(self, type_: str) -> list[Declared]:
        """Resources of one type (any API version), not counting ``existing`` references."""
        return [
            r
            for r in self.resources.values()
            if r.kind.split("@")[0].lower() == type_.lower() and not r.kind.endswith(" existing")
        ]


# ---- tokens ---------------------------------------------------------------------------------

_PUNCT = ("==", "!=", "&&", "||", "??", ">=", "<=", "=>", ".?", *"{}[]():,.?!=<>&|@+-*/%")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True)
class Token:
    kind: str  # "nl", "str", "num", "id", "p"
    text: str
    start: int
    end: int
    value: str = ""


def _string_end(src: str, i: int) -> int:
    """Index just past the string literal starting at ``src[i] == "'"``."""
    if src.startswith("'''", i):
        end = src.find("'''", i + 3)
        if end < 0:
            raise SyntaxError("unterminated multi-line string")
        return end + 3
    j = i + 1
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
        elif c == "'":
            return j + 1
        elif src.startswith("${", j):
            j = _interpolation_end(src, j + 2)
        elif c == "\n":
            raise SyntaxError(f"newline in string at {i}")
        else:
            j += 1
    raise SyntaxError("unterminated string")


def _interpolation_end(src: str, j: int) -> int:
    depth = 1
    while depth:
        c = src[j]
        if c == "'":
            j = _string_end(src, j)
            continue
        depth += c == "{"
        depth -= c == "}"
        j += 1
    return j


def tokenize(src: str) -> list[Token]:
    """Tokens of a Bicep source; comments dropped, newlines kept (they end statements)."""
    out: list[Token] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == "\n":
            out.append(Token("nl", c, i, i + 1))
            i += 1
        elif c in " \t\r":
            i += 1
        elif src.startswith("//", i):
            i = src.find("\n", i) if "\n" in src[i:] else len(src)
        elif src.startswith("/*", i):
            i = src.index("*/", i) + 2
        elif c == "'":
            end = _string_end(src, i)
            raw = src[i + 3 : end - 3] if src.startswith("'''", i) else src[i + 1 : end - 1]
            value = raw.replace("\\'", "'").replace("\\\\", "\\")
            out.append(Token("str", src[i:end], i, end, value))
            i = end
        elif m := _IDENT.match(src, i):
            out.append(Token("id", m[0], i, m.end()))
            i = m.end()
        elif m := _NUMBER.match(src, i):
            out.append(Token("num", m[0], i, m.end()))
            i = m.end()
        else:
            for p in _PUNCT:
                if src.startswith(p, i):
                    out.append(Token("p", p, i, i + len(p)))
                    i += len(p)
                    break
            else:
                raise SyntaxError(f"unexpected {c!r} at {i}")
    return out


# ---- parser ---------------------------------------------------------------------------------


_NOT_LITERAL = object()


def _literal(item: Value | Token) -> Value | object:
    """The value of a lone literal token or container; ``_NOT_LITERAL`` otherwise."""
    if isinstance(item, Token):
        if item.kind == "str":
            return item.value
        if item.kind == "num":
            return int(item.text)
        if item.text in ("true", "false"):
            return item.text == "true"
        return None if item.text == "null" else _NOT_LITERAL
    return _NOT_LITERAL if isinstance(item, Expr) else item


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.next()
        if tok.text != text:
            raise SyntaxError(f"expected {text!r}, found {tok.text!r} at {tok.start}")
        return tok

    def skip(self, *texts: str) -> None:
        while (tok := self.peek()) is not None and (tok.kind == "nl" or tok.text in texts):
            self.i += 1

    def file(self) -> BicepFile:
        f = BicepFile(self.src)
        decorators: list[str] = []
        while True:
            self.skip()
            tok = self.peek()
            if tok is None:
                return f
            if tok.text == "@":
                self.next()
                start = self.peek().start  # type: ignore[union-attr]
                self.next()  # the decorator's name
                end = self._group_end("(", ")")
                decorators.append(self.src[start:end])
                continue
            keyword = self.next().text
            if keyword == "targetScope":
                self.expect("=")
                self.expr()
            elif keyword == "param":
                name = self.next().text
                type_ = self.next().text
                has_default = self.peek() is not None and self.peek().text == "="  # type: ignore[union-attr]
                default = None
                if has_default:
                    self.next()
                    default = self.expr()
                f.params[name] = Param(type_, default, has_default, decorators)
            elif keyword == "var":
                name = self.next().text
                self.expect("=")
                f.vars[name] = self.expr()
            elif keyword in ("resource", "module"):
                name = self.next().text
                kind = self.next().value
                if self.peek().text == "existing":  # type: ignore[union-attr]
                    self.next()
                    kind += " existing"
                self.expect("=")
                target = f.resources if keyword == "resource" else f.modules
                target[name] = Declared(kind, self.expr(), decorators)
            elif keyword == "output":
                name = self.next().text
                type_ = self.next().text
                self.expect("=")
                f.outputs[name] = Declared(type_, self.expr(), decorators)
            else:
                raise SyntaxError(f"unsupported statement {keyword!r} at {tok.start}")
            decorators = []

    def _group_end(self, open_: str, close: str) -> int:
        """Skip a balanced group starting at the next token; return its end offset."""
        self.expect(open_)
        depth = 1
        while depth:
            tok = self.next()
            depth += tok.text == open_
            depth -= tok.text == close
        return self.toks[self.i - 1].end

    def expr(self) -> Value:
        """An expression up to a newline (or a closing bracket / comma) at depth zero."""
        items: list[Value | Token] = []
        start = self.peek().start if self.peek() is not None else len(self.src)  # type: ignore[union-attr]
        while (tok := self.peek()) is not None and tok.kind != "nl" and tok.text not in "}]),":
            if tok.text == "{":
                items.append(self.obj())
            elif tok.text == "[":
                items.append(self.arr())
            elif tok.text == "(":
                items.append(self.paren())
            else:
                items.append(self.next())
        end = self.toks[self.i - 1].end if self.i else start
        if len(items) == 1 and (literal := _literal(items[0])) is not _NOT_LITERAL:
            return literal  # type: ignore[return-value]
        parts: list[Value] = []
        for item in items:
            if isinstance(item, Expr):
                parts.extend(item.parts)
            elif not isinstance(item, Token):
                parts.append(item)
        return Expr(self.src[start:end], tuple(parts))

    def paren(self) -> Expr:
        start = self.expect("(").start
        parts: list[Value] = []
        while True:
            self.skip(",")
            if self.peek().text == ")":  # type: ignore[union-attr]
                break
            value = self.expr()
            parts.extend(value.parts if isinstance(value, Expr) else [value])
        end = self.next().end
        return Expr(self.src[start:end], tuple(parts))

    def obj(self) -> dict[str, Value]:
        self.expect("{")
        out: dict[str, Value] = {}
        while True:
            self.skip(",")
            tok = self.next()
            if tok.text == "}":
                return out
            key = tok.value if tok.kind == "str" else tok.text
            self.expect(":")
            out[key] = self.expr()

    def arr(self) -> Value:
        start = self.expect("[").start
        if self.peek().text == "for":  # type: ignore[union-attr]
            head: list[Token] = []
            while (tok := self.next()).text != ":":
                head.append(tok)
            self.skip()
            body = self.expr()
            self.skip()
            end = self.expect("]").end
            return Expr(self.src[start:end], (body,))
        items: list[Value] = []
        while True:
            self.skip(",")
            if self.peek().text == "]":  # type: ignore[union-attr]
                self.next()
                return items
            items.append(self.expr())


def parse(src: str) -> BicepFile:
    """Parse one Bicep source (raises SyntaxError on what it does not understand)."""
    return _Parser(src).file()


def load_texts(root: Path = INFRA) -> dict[str, str]:
    """Every .bicep file under ``root`` by its relative path (``modules/storage.bicep``)."""
    return {p.relative_to(root).as_posix(): p.read_text("utf-8") for p in root.rglob("*.bicep")}


def parse_all(texts: Mapping[str, str]) -> dict[str, BicepFile]:
    """Parse every source of ``load_texts``."""
    return {name: parse(text) for name, text in texts.items()}


def body(value: Value) -> dict[str, Value]:
    """A declaration's object body: the literal itself, or the last one in ``if``/``for``."""
    if isinstance(value, dict):
        return value
    if isinstance(value, Expr):
        for part in reversed(value.parts):
            if isinstance(part, dict):
                return part
            if isinstance(part, Expr):
                return body(part)
    raise ValueError(f"no object body in {value!r:.80}")


def walk(value: Value) -> Iterator[Value]:
    """``value`` and every value nested in it."""
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)
    elif isinstance(value, Expr):
        for v in value.parts:
            yield from walk(v)


def get(value: Value, path: str) -> Value:
    """``get(body, "properties.siteConfig.minTlsVersion")``; KeyError when a step is missing."""
    for step in path.split("."):
        if not isinstance(value, dict):
            raise KeyError(path)
        value = value[step]
    return value
