"""The one sanitiser for everything we write to a ticket: field values and our work note.

ServiceNow renders ``[code]...[/code]`` in journal fields (work notes) as raw HTML, so a ticket
text that reaches a note can become live markup; control and bidi-override characters make a
field lie about what it says. Every value and every note goes through this module right before
the platform write, on the rule path and the LLM path alike.

What survives, for a field value (``sanitize_value``):

* one line: every run of whitespace (newlines included) becomes one space;
* no control (Cc), format (Cf, which holds every bidi override/isolate/mark) or surrogate char;
* no markup: entities are decoded (to a fixed point, so ``&amp;lt;img`` is caught as well as
  ``&lt;img``), then HTML tags, comments and ``[code]``/``[/code]`` (any case, spaces inside
  the brackets) are removed, and a ``<`` survives only before a digit, ``=`` or a space and
  more text (``< 5 ms``), so nothing in the output can open a tag;
* no leading bracket tag (``[auto-triage]``, ``[External]``) and no leading "Filled
  automatically": a value never imitates our own note;
* NFC-normalised, and cut to the limit at a word boundary with "…".

A note (``sanitize_note``) gets the same, line by line, keeping ``\\n`` line breaks (``\\r\\n``
and ``\\r`` become ``\\n``) and its leading ``[auto-triage]`` prefix. Both are idempotent.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Mapping

from domain.errors import ConfigError
from domain.models import SUMMARY_MAX_CHARS

__all__ = [
    "CHOICE_MAX_CHARS",
    "DEFAULT_LIMITS",
    "NOTE_MAX_CHARS",
    "OTHER_MAX_CHARS",
    "sanitize_note",
    "sanitize_value",
    "sanitize_write",
]

log = logging.getLogger(__name__)

#: ServiceNow choice values are at most 40 characters (sys_choice.value).
CHOICE_MAX_CHARS = 40
#: Any other field we write, unless ``limits`` says otherwise.
OTHER_MAX_CHARS = 1000
NOTE_MAX_CHARS = 4000
#: Per ServiceNow field limits used by ``sanitize_write`` (``limits`` overrides them).
DEFAULT_LIMITS: Mapping[str, int] = {
    "short_description": SUMMARY_MAX_CHARS,
    **dict.fromkeys(
        ("category", "subcategory", "impact", "urgency", "priority", "state"), CHOICE_MAX_CHARS
    ),
}
#: Input beyond this is cut before cleaning (a 200 kB paste must not stall a worker).
MAX_INPUT_CHARS = 100_000
_MAX_ROUNDS = 8
_ELLIPSIS = "…"

# A tag: "<" then a letter, "/", "!" or "?" (what opens a tag, comment or processing
# instruction in an HTML tokenizer) up to the next ">".
_HTML_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
# Any "<" left, unless a digit, "=" or spaces and then more text on the line follow it.
_TAG_OPEN = re.compile(r"<(?![\d=]|[ \t]+\S)")
_CODE_TAG = re.compile(r"\[\s*/?\s*code\b[^\[\]]{0,100}\]", re.IGNORECASE)
_CODE_OPEN = re.compile(r"\[(?=\s*/?\s*code)", re.IGNORECASE)
_LEADING_TAG = re.compile(r"^\[[^\[\]]{0,80}\]\s*")
_LEADING_NOTE_TEXT = re.compile(
    r"^filled\s+automatically(?:[;:,.]?\s*please\s+correct\s+anything\s+wrong)?[\s;:,.!-]*",
    re.IGNORECASE,
)
_BLANK_LINES = re.compile(r"\n{3,}")
_CUT_TRAILING = " \n,;:-–—(<"


def sanitize_value(text: str, *, max_chars: int) -> str:
    """A field value safe to write: one line, no control/format chars, no markup, ≤ max_chars.

    Leading bracket tags (``[auto-triage] ...``) and a leading "Filled automatically" are
    removed, so a value never imitates our work note. The result may be ``""``.

    Raises:
        ConfigError: ``max_chars`` is less than 1.
    """
    _check_limit(max_chars)
    line = _tidy(_clean(text, keep_newlines=False))
    previous = None
    while previous != line:
        previous = line
        line = _LEADING_TAG.sub("", line, count=1)
        line = _LEADING_NOTE_TEXT.sub("", line, count=1)
    return _cut(line, max_chars)


def sanitize_note(text: str, *, max_chars: int = NOTE_MAX_CHARS) -> str:
    """Our work note, safe to write: like ``sanitize_value`` per line, keeping ``\\n`` breaks.

    Runs of blank lines collapse to one; the note's own leading prefix is kept.

    Raises:
        ConfigError: ``max_chars`` is less than 1.
    """
    _check_limit(max_chars)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = (_tidy(line) for line in _clean(text, keep_newlines=True).split("\n"))
    return _cut(_BLANK_LINES.sub("\n\n", "\n".join(lines)).strip(), max_chars)


def sanitize_write(
    changes: Mapping[str, str], *, note_field: str, limits: Mapping[str, int] | None = None
) -> dict[str, str]:
    """Sanitise one platform write: ``sanitize_note`` for ``note_field``, values for the rest.

    Each value is cut to its field's limit: ``limits`` first, then ``DEFAULT_LIMITS``
    (short_description 160, choice fields 40), else ``OTHER_MAX_CHARS`` (the note:
    ``NOTE_MAX_CHARS``). A value that sanitises to ``""`` is **dropped** from the result (with
    a warning naming the field), so an all-markup summary is not written as an empty field.

    Raises:
        ConfigError: a limit is less than 1.
    """
    table = {**DEFAULT_LIMITS, **(limits or {})}
    out: dict[str, str] = {}
    for field, value in changes.items():
        if field == note_field:
            clean = sanitize_note(value, max_chars=table.get(field, NOTE_MAX_CHARS))
        else:
            clean = sanitize_value(value, max_chars=table.get(field, OTHER_MAX_CHARS))
        if clean:
            out[field] = clean
        else:
            log.warning("not writing %s: nothing left of it after sanitising", field[:64])
    return out


def _check_limit(max_chars: int) -> None:
    if max_chars < 1:
        raise ConfigError(f"a sanitiser limit must be at least 1 character (got {max_chars})")


def _clean(text: str, *, keep_newlines: bool) -> str:
    """Apply ``_round`` until nothing changes (decoding one entity layer per round)."""
    text = text[:MAX_INPUT_CHARS]
    for _ in range(_MAX_ROUNDS):
        cleaned = _round(text, keep_newlines)
        if cleaned == text:
            return text
        text = cleaned
    # Still encoded after _MAX_ROUNDS layers (&amp;amp;amp;...): no "&" may start an entity.
    # Without "&" one round is a fixed point (no step creates input for an earlier one).
    return _round(text.replace("&", "＆"), keep_newlines)


def _round(text: str, keep_newlines: bool) -> str:
    """Decode one layer of entities, drop invisible chars, remove markup, NFC-normalise."""
    if "&" in text:
        text = html.unescape(text)
    text = _strip_invisible(text, keep_newlines)
    # Removed markup becomes a space, so the text around it cannot join into new markup.
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
        text = _TAG_OPEN.sub(" ", text)
    if "[" in text:
        text = _CODE_TAG.sub(" ", text)
        text = _CODE_OPEN.sub(" ", text)
    return unicodedata.normalize("NFC", text)


def _strip_invisible(text: str, keep_newlines: bool) -> str:
    """Whitespace controls → space (``\\n`` kept in notes); other Cc, Cf and Cs removed."""
    if text.isprintable():  # the common case: no Cc/Cf/Cs, no whitespace but " "
        return text
    out: list[str] = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif char.isspace():
            out.append(" ")
        elif unicodedata.category(char) not in ("Cc", "Cf", "Cs"):
            out.append(char)
    return "".join(out)


def _tidy(line: str) -> str:
    """One space between words, none at the ends.

    Safe after ``_clean``: every pattern it removes reads any whitespace run like one space.
    """
    return " ".join(line.split())


def _cut(text: str, limit: int) -> str:
    """Cut to ``limit`` chars at a word boundary (inside a very long word if need be), "…"."""
    if len(text) <= limit:
        return text
    head = text[: limit - len(_ELLIPSIS)]
    space = max(head.rfind(" "), head.rfind("\n"))
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(_CUT_TRAILING) + _ELLIPSIS
