"""Markup noise: strip markdown/HTML scaffolding, code, URLs and stack traces from ticket text.

Issue-tracker markdown and e-mail HTML carry scaffolding nobody wrote about the problem (HTML
comments and tags, code fences, images and links, headings, tables, list markers, stack
traces). ``strip_markup`` removes it line by line, keeping the line structure that the e-mail
boilerplate rules in ``enrichers.text`` read next; ``tidy`` collapses the whitespace left over.
Pure; ``enrichers.text`` re-exports ``strip_markup``.
"""

from __future__ import annotations

import html
import re

__all__ = ["MAX_INPUT_CHARS", "strip_markup", "tidy"]

#: Text longer than this is cut before cleaning, so one 200 kB log paste cannot stall a worker.
MAX_INPUT_CHARS = 20_000

_I = re.IGNORECASE

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
_CODE_FENCE = re.compile(
    r"^[ \t]*(```|~~~)[\w+.#-]*[ \t]*$.*?(?:^[ \t]*\1[^\n]*$|\Z)", re.DOTALL | re.MULTILINE
)
_HTML_BREAK = re.compile(r"<(?:br|/p|/div|/li|/tr|/h[1-6])\b[^>]{0,200}>", _I)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]{0,20}(?:\s[^<>]{0,300})?/?>")
# ServiceNow journal markup: [code]...[/code] renders its content as HTML.
_SN_CODE_TAG = re.compile(r"\[\s*/?\s*code\s*\]", _I)
_MD_IMAGE = re.compile(r"!\[[^\]\n]{0,300}\]\([^)\s]{0,500}\)")
_MD_LINK = re.compile(r"\[([^\]\n]{1,300})\]\([^)\s]{0,500}\)")
_URL = re.compile(r"(?:\bhttps?://|\bwww\.)[^\s<>()\"']+", _I)
_INLINE_CODE = re.compile(r"`{1,3}([^`\n]{0,300})`{1,3}")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}(?:[ \t].*)?$", re.MULTILINE)
# A line that is only bold/italic text is a template label ("**Describe the bug**").
_BOLD_LABEL = re.compile(r"^[ \t]*(\*\*|__)[^\n]{1,300}?\1[ \t]*:?[ \t]*$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+(?:\[[ xX]\][ \t]+)?", re.MULTILINE)
_TABLE_LINE = re.compile(r"^[ \t]*\|.*\|[ \t]*$|^[ \t]*[-:| ]{3,}$", re.MULTILINE)
_STACK_LINE = re.compile(
    r"^[ \t]*(?:at\s+[\w$.<>]+[\s(].*[:)]|File \"[^\"]+\", line \d+.*|Traceback \(most recent"
    r" call last\):.*|#\d+\s+0x[0-9a-f]+.*|\w+\.\w+\.\w+.*\(\w+\.java:\d+\))$",
    re.MULTILINE,
)
_WS = re.compile(r"[ \t\u00a0\u200b]+")
_BLANKS = re.compile(r"\n{3,}")


def strip_markup(text: str, *, entities: bool = True) -> str:
    """Remove markdown/HTML scaffolding, code blocks, URLs and stack traces; keep lines.

    ``entities=False``: the text was made from HTML and its entities are decoded already.
    """
    text = text[:MAX_INPUT_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    # Entities first: decoding after the tags were stripped would revive "&lt;img ...&gt;".
    # Text made from HTML had its entities decoded already: decoding twice would turn a
    # written "&amp;lt;" into "<".
    if entities and "&" in text:
        text = html.unescape(text)
    text = _HTML_COMMENT.sub("\n", text)
    text = _CODE_FENCE.sub("\n", text)
    if "<" in text:
        text = _HTML_BREAK.sub("\n", text)
        text = _HTML_TAG.sub(" ", text)
    if "[" in text:
        text = _SN_CODE_TAG.sub(" ", text)
    # Each pass is guarded by a cheap substring test: plain e-mails skip most of them.
    if "](" in text:
        text = _MD_IMAGE.sub(" ", text)
        text = _MD_LINK.sub(r"\1", text)
    if "://" in text or "www." in text:
        text = _URL.sub(" ", text)
    if "`" in text:
        text = _INLINE_CODE.sub(r"\1", text)
    if "#" in text:
        text = _HEADING.sub("", text)
    if "**" in text or "__" in text:
        text = _BOLD_LABEL.sub("", text)
        text = _EMPHASIS.sub(r"\2", text)
    if "|" in text or "---" in text:
        text = _TABLE_LINE.sub("", text)
    if "(" in text or "File" in text or "#" in text:
        text = _STACK_LINE.sub("", text)
    text = _LIST_MARKER.sub("", text)
    return tidy(text)


def tidy(text: str) -> str:
    """Collapse runs of spaces and of blank lines; strip each line."""
    text = _WS.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", text).strip()
