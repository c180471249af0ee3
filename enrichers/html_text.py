"""HTML e-mail bodies as text, and where their quoted reply chain starts.

Cases created from e-mail carry the message's HTML (Outlook, Outlook on the web, Gmail). This
module turns it into the plain text the e-mail cleaning in ``enrichers.text`` works on:

* ``looks_like_html(text)`` — a whole HTML document, or block markup without bare line breaks.
* ``html_to_text(html)`` — block elements and ``<br>`` become line breaks; ``<style>``,
  ``<script>``, ``<head>``, comments and hidden elements (``display:none``, ``hidden``,
  ``mso-hide:all``) are dropped; entities are decoded once; link text is kept, URLs and images
  are not. A decoded ``<`` before a letter gets a space after it, so no output reads as a tag.
* ``split_html_reply(html)`` — the text before the quoted chain and the chain itself. The chain
  starts at Outlook's ``<div id="divRplyFwdMsg">`` / ``<div id="appendonsend">``, Gmail's
  ``gmail_quote``, a ``<blockquote>``, or in the text at a ``-----Original Message-----`` line
  or a ``From:``/``Sent:`` header block (English, Danish, Norwegian, Swedish, German), which
  also covers Outlook's ``<hr>`` followed by such a block.

Pure stdlib (``html.parser``); input beyond ``MAX_HTML_CHARS`` is cut first, and a parser
failure falls back to a crude tag strip, so no input raises.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

__all__ = ["MAX_HTML_CHARS", "html_to_text", "looks_like_html", "split_html_reply"]

#: HTML longer than this is cut before parsing (Outlook bodies are mostly style; 20k of text).
MAX_HTML_CHARS = 400_000
_MAX_OPEN = 400  # open elements tracked; deeper ones are treated as void

_I = re.IGNORECASE
_DOCUMENT = re.compile(r"<(?:!doctype\s+html|html[\s>]|body[\s>]|head[\s>])", _I)
_BLOCK_TAG = re.compile(r"<(?:p|div|br|table|tr|li|ul|ol|blockquote|h[1-6])\b[^<>]{0,500}>", _I)
_BARE_NEWLINE = re.compile(r"[^>\s][ \t]*\r?\n[ \t]*[^<\s]")
_SKIPPED = frozenset({"style", "script", "head", "title", "template", "noscript", "xml", "svg"})
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    ]
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all", _I)
_REPLY_IDS = frozenset({"divrplyfwdmsg", "appendonsend", "x_divrplyfwdmsg", "x_appendonsend"})
_REPLY_CLASSES = frozenset({"gmail_quote", "gmail_quote_container", "yahoo_quoted"})
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0\u200b\u2028\u2029]+")
_TAG_LIKE = re.compile(r"<(?=[A-Za-z/!?])")
_FALLBACK_TAG = re.compile(r"<[^<>]{0,2000}>")
_BLANKS = re.compile(r"\n{3,}")

_FROM = r"from|fra|från|von|van|de"
_SENT = r"sent|sendt|skickat|gesendet|date|dato|datum"
_HEADER_FROM = re.compile(rf"^[ \t*]*(?:{_FROM})[ \t*]*:", _I)
_HEADER_SENT = re.compile(rf"^[ \t*]*(?:{_SENT})[ \t*]*:", _I)
_ONE_LINE_HEADER = re.compile(rf"^[ \t*]*(?:{_FROM})[ \t*]*:.{{1,300}}?\b(?:{_SENT})[ \t*]*:", _I)
_SEPARATOR = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:original message|forwarded message|oprindelig meddelelse|"
    r"videresendt meddelelse|opprinnelig melding|videresendt melding|ursprungligt meddelande|"
    r"vidarebefordrat meddelande|ursprüngliche nachricht|weitergeleitete nachricht)[ \t]*-{2,}",
    _I,
)


def looks_like_html(text: str) -> bool:
    """True for an HTML document, or for block markup whose line breaks all touch a tag.

    A plain-text description with a stray ``<b>`` keeps its own line breaks (and goes through
    the plain-text path): HTML would fold them into spaces.
    """
    head = text[:MAX_HTML_CHARS]
    if "<" not in head:
        return False
    if _DOCUMENT.search(head[:4000]):
        return True
    return bool(_BLOCK_TAG.search(head)) and not _BARE_NEWLINE.search(head)


def html_to_text(html: str) -> str:
    """The visible text of ``html``, one line per block, the quoted chain included."""
    text, _ = _convert(html)
    return text


def split_html_reply(html: str) -> tuple[str, str]:
    """``(text before the quoted reply chain, the chain)``; the chain is '' when there is none."""
    text, marker = _convert(html)
    cut = len(text) if marker is None else marker
    lines = text[:cut].split("\n")
    offset = 0
    for index, line in enumerate(lines):
        if _starts_chain(lines, index):
            cut = offset
            break
        offset += len(line) + 1
    return _tidy(text[:cut]), _tidy(text[cut:])


def _starts_chain(lines: list[str], index: int) -> bool:
    """A separator line, a one-line "From: … Sent: …", or From: with Sent:/Date: soon after."""
    line = lines[index]
    if _SEPARATOR.match(line) or _ONE_LINE_HEADER.match(line):
        return True
    if not _HEADER_FROM.match(line):
        return False
    return any(_HEADER_SENT.match(following) for following in lines[index + 1 : index + 4])


def _convert(html: str) -> tuple[str, int | None]:
    """Tidy text and the offset in it where the first reply marker element started."""
    parser = _TextParser()
    try:
        parser.feed(html[:MAX_HTML_CHARS])
        parser.close()
    except (AssertionError, AttributeError, IndexError, ValueError, RecursionError):
        return _tidy(_crude(html[:MAX_HTML_CHARS])), None  # an html.parser bug: strip tags
    raw = "".join(parser.out)  # "<" and "b" may come from two pieces: space them when joined
    if parser.marker is None:
        return _tidy(_TAG_LIKE.sub("< ", raw)), None
    head = _tidy(_TAG_LIKE.sub("< ", raw[: parser.marker]))
    tail = _tidy(_TAG_LIKE.sub("< ", raw[parser.marker :]))
    return (f"{head}\n\n{tail}" if head and tail else head or tail), len(head) + (
        2 if head and tail else 0
    )


def _crude(html: str) -> str:
    text = _FALLBACK_TAG.sub("\n", html)
    return _TAG_LIKE.sub("< ", unescape(text))


def _tidy(text: str) -> str:
    """Spaces collapsed, lines stripped, at most one blank line in a row."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


class _TextParser(HTMLParser):
    """Collects visible text; block boundaries and ``<br>`` become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.marker: int | None = None
        self._open: list[tuple[str, bool]] = []  # (tag, hides its content)
        self._hidden = 0
        self._pre = 0
        self._at_line_start = True
        self._length = 0

    def _emit(self, text: str) -> None:
        self.out.append(text)
        self._length += len(text)
        self._at_line_start = text.endswith("\n")

    def _break(self) -> None:
        if not self._at_line_start:
            self._emit("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # a <head> left open must not hide the whole message
            self.handle_endtag("head")
        attributes = {name.lower(): (value or "") for name, value in attrs}
        hides = (
            tag in _SKIPPED
            or "hidden" in attributes
            or bool(_HIDDEN_STYLE.search(attributes.get("style", "")))
        )
        if self.marker is None and not self._hidden and _is_reply_marker(tag, attributes):
            self._break()
            self.marker = self._length
        if tag == "br" and not self._hidden:
            self._emit("\n")
        elif tag in _BLOCKS and not self._hidden:
            self._break()
        elif tag in ("td", "th") and not self._hidden:
            self._emit(" ")
        if tag in _VOID or len(self._open) >= _MAX_OPEN:
            return
        self._open.append((tag, hides))
        self._hidden += hides
        self._pre += tag == "pre"

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                for closed, hides in self._open[index:]:
                    self._hidden -= hides
                    self._pre -= closed == "pre"
                del self._open[index:]
                break
        else:
            return  # a stray end tag
        if tag in _BLOCKS and not self._hidden:
            self._break()

    def handle_data(self, data: str) -> None:
        if self._hidden or not data:
            return
        if self._pre:
            self._emit(data.replace("\r\n", "\n"))
            return
        text = _SPACES.sub(" ", data)
        if self._at_line_start:
            text = text.lstrip(" ")
            if not text and "\u00a0" in data:  # Outlook's <p>&nbsp;</p>: an empty line
                self._emit("\n")
        if text:
            self._emit(text)


def _is_reply_marker(tag: str, attributes: dict[str, str]) -> bool:
    if tag == "blockquote":
        return True
    if attributes.get("id", "").lower() in _REPLY_IDS:
        return True
    classes = attributes.get("class", "").lower().split()
    return any(c in _REPLY_CLASSES for c in classes)
