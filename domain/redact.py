"""Keep secrets out of exception text and logs: ``Redactor``, ``RedactingFilter``, ``secrets_of``.

A ``Redactor`` knows the process's secrets and replaces every form of each one with ``***``:

* raw, URL-encoded in any style (``quote``, ``quote_plus``, any set of safe characters, upper-,
  lower- or mixed-case ``%xx``), JSON-escaped (``\\uXXXX`` in either case, ``\\/``, short
  escapes), HTML-escaped, and any mix of these within one occurrence;
* base64 (standard and URL-safe alphabets) of the secret at any byte alignment, which covers
  the secret itself and ``base64("user:" + secret)`` of HTTP basic auth for any user name;
  ``add_basic`` also removes the exact ``user:password`` encoding, user name included.

Secrets we do not know are caught by shape: the credentials after ``Bearer``/``Basic``, the
value of an ``Authorization`` header, and ``client_secret``/``password``/``access_token``/
``refresh_token``/``api-key``/``AccountKey``/``sig`` values in form, JSON or dict syntax.

Trade-offs: a secret shorter than four characters is scrubbed only as a whole token (its raw or
encoded form not touching a letter, digit or ``_``) and without the base64 search, because
replacing every occurrence of two letters would wreck every log line while hiding next to
nothing (such a secret is guessable anyway). Secrets made only of ``*`` are ignored: they are
part of the marker. The ``Basic`` rule also blanks the word after a capitalised "Basic" in
prose ("Basic *** failed"); an unreadable word is cheaper than a leaked credential.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from domain.errors import BODY_EXCERPT_CHARS

__all__ = [
    "MARKER",
    "RedactingFilter",
    "Redactor",
    "install_log_redaction",
    "secrets_of",
]

MARKER = "***"
# Shorter secrets are scrubbed only as whole tokens and without the base64 search.
MIN_SEARCH_LEN = 4
# scrub() repeats until nothing changes (a replacement can join its neighbours into a new
# match, "xx***" → "x***" for the secret "x***"); the cap only guards against the pathological.
MAX_PASSES = 8
# The longest way one character is written (``\uD83D\uDE00``, four %xx escapes).
MAX_CHAR_FORM = 12
# How much of a body ``excerpt`` scrubs at first.
EXCERPT_WINDOW = 4096

_Secret = str | SecretStr | SecretBytes | None

# JSON's two-character escapes: '"' is written \", a newline \n, and so on.
_JSON_SHORT = dict(zip('"\\/\b\f\n\r\t', '"\\/bfnrt', strict=True))
_HTML = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
# Field names whose value is a credential (AccountKey: a Storage connection string).
_CREDENTIAL_FIELDS = (
    r"client_secret|password|passwd|access_token|refresh_token|api[-_]?key|accountkey|sig"
)
# "Authorization: Basic xyz", "'authorization': 'Bearer xyz'", "Authorization=xyz".
_AUTH_HEADER = re.compile(
    r"(?i)((?<![A-Za-z0-9])(?:proxy-)?authorization\\?[\"']?\s*[:=]\s*\\?[\"']?)"
    r"(?:([A-Za-z][\w.-]*)[ \t]+)?[^\s\"'\\,;]+"
)
# Credentials after a scheme name, wherever they appear.
_SCHEME = re.compile(r"\b(Bearer|bearer|BEARER|Basic|BASIC)([ \t]+)[^\s\"'\\,;]+")
# client_secret=..., password=... in a form body or query string.
_FORM_FIELD = re.compile(rf"(?i)((?<![A-Za-z0-9])(?:{_CREDENTIAL_FIELDS})=)[^&\s\"'\\]+")
# "client_secret": "...", 'api-key': '...' in JSON or a Python dict repr.
_QUOTED_FIELD = re.compile(
    rf"(?i)(([\"'])(?:{_CREDENTIAL_FIELDS})\2\s*:\s*([\"']))(?:(?!\3)[^\\\r\n]|\\.)+(?=\3)"
)


def _generic(text: str) -> str:
    text = _AUTH_HEADER.sub(
        lambda m: f"{m[1]}{m[2] + ' ' if m[2] else ''}{MARKER}",
        text,
    )
    text = _SCHEME.sub(lambda m: f"{m[1]}{m[2]}{MARKER}", text)
    text = _FORM_FIELD.sub(lambda m: f"{m[1]}{MARKER}", text)
    return _QUOTED_FIELD.sub(lambda m: f"{m[1]}{MARKER}", text)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. undecodable bytes of an env variable
        return text.encode("utf-8", "surrogatepass")


def _hex(value: int, width: int) -> str:
    """A regex for ``value`` in hex, each letter digit in either case."""
    digits = f"{value:0{width}x}"
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in digits)


def _json_u(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return r"\\u" + _hex(code, 4)
    code -= 0x10000
    return r"\\u" + _hex(0xD800 + (code >> 10), 4) + r"\\u" + _hex(0xDC00 + (code & 0x3FF), 4)


def _char_pattern(char: str) -> str:
    """Every way one character of a secret is written: raw, %xx, JSON, HTML or repr escapes."""
    alternatives = [re.escape(char), "".join("%" + _hex(b, 2) for b in _utf8(char)), _json_u(char)]
    if 0x80 <= ord(char) < 0x100:  # a Latin-1 form encoder
        alternatives.append("%" + _hex(ord(char), 2))
    if char == " ":
        alternatives.append(r"\+")
    if char in _JSON_SHORT:
        alternatives.append(re.escape("\\" + _JSON_SHORT[char]))
    if char == "'":
        alternatives.append(r"\\'")
    if ord(char) < 0x100:  # Python repr of a non-printable character
        alternatives.append(r"\\x" + _hex(ord(char), 2))
    elif ord(char) >= 0x10000:
        alternatives.append(r"\\U" + _hex(ord(char), 8))
    if char in _HTML:
        alternatives.append(f"&(?:{_HTML[char]}|#0?{ord(char)}|#[xX]0?{_hex(ord(char), 2)});")
    return "(?:" + "|".join(alternatives) + ")"


def _base64_cores(secret: bytes) -> set[str]:
    """The base64 characters fixed by ``secret`` alone, at each of the three byte alignments.

    Inside ``base64(prefix + secret + suffix)`` the characters whose six bits all come from the
    secret depend only on ``len(prefix) % 3``, so these strings find the secret in the encoding
    of ``user:password`` for any user, or in the encoding of a larger document.
    """
    cores: set[str] = set()
    n = len(secret)
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode("ascii")
        first = -(-8 * offset // 6)  # first character starting inside the secret
        last = (8 * (offset + n)) // 6  # one past the last character ending inside it
        core = encoded[first:last]
        cores.add(core)
        cores.add(core.replace("+", "-").replace("/", "_"))
    return cores


def _encodings(text: str) -> list[bytes]:
    """UTF-8, and Latin-1 when it differs (requests encodes a basic-auth password as Latin-1)."""
    found = [_utf8(text)]
    try:
        latin1 = text.encode("latin-1")
    except UnicodeEncodeError:
        return found
    return found if latin1 == found[0] else [*found, latin1]


def _secret_text(secret: _Secret) -> str:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value()
    if isinstance(secret, SecretBytes):
        return secret.get_secret_value().decode("utf-8", "replace")
    return secret or ""


class Redactor:
    """Scrubs every known form of the configured secrets, and credential-shaped text, from text.

    Thread-safe: ``add`` swaps in a new compiled pattern; ``scrub`` reads whichever is current.
    """

    def __init__(self, secrets: Iterable[_Secret] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, None] = {}
        self._literals: dict[str, None] = {}
        self._pattern: re.Pattern[str] | None = None
        self._longest_form = 0
        for secret in secrets:
            self.add(secret)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"

    def __len__(self) -> int:
        return len(self._secrets)

    def add(self, secret: _Secret) -> None:
        """Scrub ``secret`` from now on (``None``, empty and all-``*`` values are ignored)."""
        text = _secret_text(secret)
        if not text.strip("*") or text in self._secrets:
            return
        with self._lock:
            self._secrets[text] = None
            self._rebuild()

    def discard(self, secret: _Secret) -> None:
        """Stop scrubbing ``secret`` (a replaced access token); unknown values are ignored."""
        text = _secret_text(secret)
        if text not in self._secrets:
            return
        with self._lock:
            self._secrets.pop(text, None)
            self._rebuild()

    def add_basic(self, username: str, password: _Secret) -> None:
        """Scrub the password and the exact ``base64(username:password)`` of basic auth."""
        text = _secret_text(password)
        self.add(text)
        if not text.strip("*"):
            return
        with self._lock:
            for pair in _encodings(f"{username}:{text}"):
                for encode in (base64.b64encode, base64.urlsafe_b64encode):
                    encoded = encode(pair).decode("ascii")
                    self._literals[encoded] = None  # padding included: longest first
                    self._literals[encoded.rstrip("=")] = None
            self._rebuild()

    def scrub(self, text: str) -> str:
        """``text`` with every form of every secret, and any bearer/basic credential, masked."""
        pattern = self._pattern
        for _ in range(MAX_PASSES):
            before = text
            if pattern is not None:
                text = pattern.sub(MARKER, text)
            text = _generic(text)
            if text == before:
                break
        return text

    def excerpt(self, text: str, limit: int = BODY_EXCERPT_CHARS) -> str:
        """At most ``limit`` characters of ``text``, whitespace collapsed, scrubbed before the cut.

        Scrubbing first matters: cutting first could leave the head of a secret at the end.
        """
        # A huge body (an HTML error page) is not scrubbed whole: a head is enough when what
        # is left after scrubbing reaches past the cut by more than one secret's longest form,
        # since only the form cut at the head's end can survive, and it sits at the very end.
        reach = limit + self._longest_form
        size = max(EXCERPT_WINDOW, 4 * reach)
        while True:
            head = text[:size]
            clean = self.scrub(" ".join(self.scrub(head).split()))
            if size >= len(text) or len(clean) > reach:
                return clean[:limit]
            size *= 4

    def _rebuild(self) -> None:
        # Longest first: where one secret contains another, the longer must win the alternation.
        weighted: list[tuple[int, str]] = []
        for secret in self._secrets:
            body = "".join(_char_pattern(c) for c in secret)
            if len(secret) < MIN_SEARCH_LEN:
                weighted.append((len(secret), rf"(?<!\w)(?:{body})(?!\w)"))
                continue
            weighted.append((len(secret), body))
            for raw in _encodings(secret):
                weighted.extend((len(core), re.escape(core)) for core in _base64_cores(raw))
        weighted.extend((len(lit), re.escape(lit)) for lit in self._literals)
        weighted.sort(key=lambda item: -item[0])
        self._longest_form = max(
            [MAX_CHAR_FORM * len(s) for s in self._secrets] + [len(lit) for lit in self._literals],
            default=0,
        )
        self._pattern = re.compile("|".join(src for _, src in weighted)) if weighted else None


class RedactingFilter(logging.Filter):
    """Scrubs the message, arguments, exception and stack text of every record it sees.

    The formatted message replaces ``msg`` and ``args`` is emptied, so no handler can format the
    raw arguments again. When scrubbing changes the exception text, the scrubbed text is stored
    in ``exc_text`` (which ``logging.Formatter`` prints as is) and ``exc_info`` is dropped, so a
    handler that formats the exception object itself cannot bring the secret back.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        scrub = self.redactor.scrub
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: logging would print them raw in handleError
            message = f"{record.msg} (log arguments could not be formatted)"
        record.msg, record.args = scrub(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or _FORMATTER.formatException(record.exc_info)
            record.exc_text = scrub(text)
            if record.exc_text != text:
                record.exc_info = None
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def install_log_redaction(
    redactor: Redactor, logger: logging.Logger | None = None
) -> RedactingFilter:
    """Add a ``RedactingFilter`` to ``logger`` (default: root) and to each of its handlers.

    Both, because a filter on a logger only sees records logged on that very logger, not the
    ones propagated from child loggers (``connectors._http``, ``triage.service``...), while a
    filter on a handler sees every record the handler emits. The logger's own filter still
    covers records logged on it and emitted by handlers attached after this call. Handlers
    attached later elsewhere are not covered. Any ``RedactingFilter`` installed before on the
    same logger and handlers is replaced, so calling this again (a rebuilt service) does not
    stack filters. Returns the filter.
    """
    target = logger if logger is not None else logging.getLogger()
    redacting = RedactingFilter(redactor)
    for filterer in (target, *target.handlers):
        for old in [f for f in filterer.filters if isinstance(f, RedactingFilter)]:
            filterer.removeFilter(old)
        filterer.addFilter(redacting)
    return redacting


def secrets_of(settings: BaseModel) -> list[str]:
    """Every non-empty ``SecretStr``/``SecretBytes`` value in ``settings``, nested models included.

    Walks the model's fields generically (models, lists, tuples, sets, dict values), so a secret
    field added later is found without touching this function. Works on ``Settings`` and on any
    of its parts.
    """
    found: dict[str, None] = {}
    _collect(settings, found)
    return list(found)


def _collect(value: Any, found: dict[str, None]) -> None:
    if isinstance(value, SecretStr | SecretBytes):
        if text := _secret_text(value):
            found[text] = None
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect(getattr(value, name), found)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect(item, found)
