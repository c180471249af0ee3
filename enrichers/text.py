"""Pure text helpers: strip e-mail boilerplate and markup noise, split sentences.

Tickets arrive as raw e-mails (English, Danish, Swedish, German) or as issue-tracker markdown.
Everything a person did not write *about the problem* is noise to every text enricher:
forwarded header blocks, greetings, sign-offs and the signature after them, disclaimers,
quoted replies, and markdown/template scaffolding (HTML comments, code, URLs, stack traces).

Public API:

HTML bodies (an e-mail activity's ``description``) are detected by ``looks_like_html`` and
turned into text by ``enrichers.html_text`` first; their quoted reply chain is cut unless the
sender's own text is too thin to stand alone (fewer than ``MIN_OWN_WORDS`` words: a bare
forward, "still broken?"), and the first cut header block's ``Subject:`` is kept.

* ``clean_email_text(text)`` — one call for classifiers: markup + boilerplate stripped,
  whitespace collapsed to single spaces between lines.
* ``strip_boilerplate(text)`` — e-mail boilerplate only; keeps line structure.
* ``strip_markup(text)`` — markdown/HTML/code/URL/stack-trace noise only; keeps line structure.
* ``parse_email(text)`` — both, plus the ``Subject:`` lines of forwarded/quoted header blocks.
* ``split_sentences(text)`` — sentence split aware of e-mail line breaks and abbreviations.
* ``is_greeting(line)`` / ``strip_greeting(line)`` — greeting detection for one line.
* ``clean_title(title)`` / ``is_informative_title(title)`` — "RE:/FW:"-free subject lines, and
  whether one says anything specific.

Markup stripping lives in ``enrichers.text_markup``, sentence splitting and titles in
``enrichers.text_sentences``; this module holds the e-mail boilerplate rules and re-exports
the others' public names.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from enrichers.html_text import looks_like_html, split_html_reply
from enrichers.text_markup import MAX_INPUT_CHARS, strip_markup, tidy
from enrichers.text_sentences import clean_title, is_informative_title, split_sentences

__all__ = [
    "CleanedEmail",
    "clean_email_text",
    "clean_title",
    "is_greeting",
    "is_informative_title",
    "parse_email",
    "split_sentences",
    "strip_boilerplate",
    "strip_greeting",
    "strip_markup",
]

#: An HTML e-mail's own text needs this many words for its quoted reply chain to be cut.
MIN_OWN_WORDS = 8

_I = re.IGNORECASE
_IM = re.IGNORECASE | re.MULTILINE

# --- e-mail boilerplate ------------------------------------------------------------------------
_HEADER_KEYS = (
    r"from|sent|to|cc|bcc|subject|date|reply-to|importance|"
    r"fra|sendt|til|emne|dato|"
    r"från|skickat|till|ämne|kopia|"
    r"von|gesendet|an|betreff|datum|kopie"
)
_HEADER_LINE = re.compile(rf"^[ \t>*]*(?:{_HEADER_KEYS})[ \t*]*:(.*)$", _I)
_HEADER_START = re.compile(r"^[ \t>*]*(?:from|fra|från|von|de|van)[ \t*]*:", _I)
# "From: Monday / To: Friday" in a leave request is not a header block; these keys make it one.
_HEADER_DISTINCT = re.compile(
    r"^[ \t>*]*(?:sent|subject|date|cc|fra|sendt|emne|dato|skickat|ämne|gesendet|betreff|datum)"
    r"[ \t*]*:",
    _I,
)
_SUBJECT_LINE = re.compile(r"^[ \t>*]*(?:subject|emne|ämne|betreff)[ \t*]*:[ \t*]*(.*)$", _I)
_SEPARATOR = re.compile(
    r"^[ \t>]*-{2,}[ \t]*(?:original message|forwarded message|oprindelig meddelelse|"
    r"videresendt meddelelse|ursprungligt meddelande|vidarebefordrat meddelande|"
    r"ursprüngliche nachricht|weitergeleitete nachricht)[ \t]*-{2,}[ \t]*$|^[ \t]*_{10,}[ \t]*$",
    _I,
)
# "On <date>, <name> wrote:"; Danish/Swedish/German put the name after the verb.
_WROTE = re.compile(r"^[ \t>]*\S.{0,300}\b(?:wrote|skrev|schrieb|a écrit)\b.{0,80}:\s*$", _I)
_QUOTED = re.compile(r"^[ \t]*>")

_GREETING_WORDS = (
    r"hi|hello|hey|hiya|dear|good\s+(?:morning|afternoon|evening|day)|greetings|"
    r"to\s+whom\s+it\s+may\s+concern|hej|hejsa|hejhej|hallo|halløj|hallå|hei|kære|kæreste|"
    r"god\s+(?:morgen|morgon|eftermiddag|dag)|goddag|morn|käre|kära|bästa|"
    r"guten\s+(?:morgen|tag|abend)|liebe[rs]?|sehr\s+geehrte[rs]?|moin|servus|grüß\s+gott|"
    r"grüezi"
)
# A greeting line: the greeting plus a few name words, ending in punctuation; or at most two
# words without it ("Hi team"). "Hi I cannot log in" is not a greeting line.
_GREETING_LINE = re.compile(
    rf"^\W*(?:{_GREETING_WORDS})\b(?:(?:[ \t]+[\w'.&-]+){{0,6}}[ \t]*[,!:;.]|"
    rf"(?:[ \t]+[\w'.&-]+){{0,2}})[ \t]*$",
    _I,
)
_GREETING_PREFIX = re.compile(
    rf"^\W*(?:{_GREETING_WORDS})\b(?:[ \t]+[\w'.&-]+){{0,4}}[ \t]*[,!:;][ \t]*", _I
)
_SIGNOFF = re.compile(
    r"^--$|^\W*(?:(?:best|kind|warm|many|with)\s+(?:regards|wishes)|regards|br|rgds|cheers|"
    r"sincerely|yours\s+(?:sincerely|truly|faithfully)|best|all\s+the\s+best|"
    r"thanks?(?:\s+(?:you|a\s+lot|so\s+much|again|in\s+advance))*|thx|ty|tia|"
    r"(?:med\s+)?venlig(?:st)?\s+hilsen|mvh|vh|hilsen|de\s+bedste\s+hilsner|"
    r"tak(?:\s+på\s+forhånd)?|på\s+forhånd\s+tak|mange\s+tak|"
    r"(?:med\s+)?vänliga\s+hälsningar|vänligen|hälsningar|mvh|tack(?:\s+på\s+förhand)?|"
    r"mit\s+freundlichen\s+grüßen|mfg|(?:viele|beste|liebe|freundliche)\s+grüße|lg|vg|"
    r"gruß|grüße|danke(?:\s+(?:schön|sehr|im\s+voraus))?|vielen\s+dank(?:\s+im\s+voraus)?)"
    r"[\s,.!]*$",
    _I,
)
_MOBILE_SIG = re.compile(
    r"^\W*(?:sent\s+from\s+my\s+\w+|get\s+outlook\s+for\s+\w+|sendt\s+fra\s+min\s+\w+|"
    r"skickat\s+från\s+min\s+\w+|von\s+meinem\s+\w+\s+gesendet|gesendet\s+von\s+meinem\s+\w+)",
    _I,
)
_DISCLAIMER = re.compile(
    r"\b(?:this\s+e-?mail(?:\s+message)?(?:\s+and\s+any\s+attachments?)?\s+(?:is|are|may\s+"
    r"contain)|confidentiality\s+notice|the\s+information\s+(?:contained\s+)?in\s+this\s+"
    r"(?:e-?mail|message)|if\s+you\s+are\s+not\s+the\s+intended\s+recipient|"
    r"this\s+(?:e-?mail|message)\s+originated\s+from\s+outside|do\s+not\s+click\s+links|"
    r"please\s+consider\s+the\s+environment|denne\s+e-?mail\s+(?:er|kan)|denne\s+meddelelse|"
    r"hvis\s+du\s+ikke\s+er\s+den\s+(?:rette|korrekte|tiltænkte)\s+modtager|"
    r"(?:kan\s+indeholde|er)\s+fortrolig|"
    r"detta\s+e-?(?:post|mail)(?:meddelande)?\s+(?:är|kan)|om\s+du\s+inte\s+är\s+(?:rätt|"
    r"avsedd)\s+mottagare|konfidentiell\s+information|diese\s+(?:e-?mail|nachricht)\s+(?:enthält|ist|kann)|"
    r"wenn\s+sie\s+nicht\s+der\s+(?:richtige|beabsichtigte)\s+(?:adressat|empfänger)|"
    r"vertrauliche\s+informationen)",
    _I,
)
# Every disclaimer pattern contains one of these; most lines contain none, so skip the regex.
_DISCLAIMER_HINTS = (
    "mail",
    "message",
    "intended",
    "environment",
    "click",
    "meddelelse",
    "modtager",
    "fortrolig",
    "mottagare",
    "konfidentiell",
    "e-post",
    "nachricht",
    "adressat",
    "empfänger",
    "vertraulich",
    "information",
)
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class CleanedEmail:
    """The person-written text of an e-mail and the subjects of any forwarded messages in it."""

    body: str
    subjects: tuple[str, ...] = ()


def strip_boilerplate(text: str) -> str:
    """Remove e-mail headers, greetings, sign-offs, signatures, disclaimers and quotes."""
    return parse_email(text, markup=False).body


def clean_email_text(text: str) -> str:
    """The person-written text of a raw e-mail or issue, on one line per paragraph line."""
    body = parse_email(text).body
    return " ".join(line for line in body.split("\n") if line)


@functools.lru_cache(maxsize=256)
def parse_email(text: str, *, markup: bool = True) -> CleanedEmail:
    """Strip boilerplate (and, by default, markup); return the body and forwarded subjects.

    Cached: the keyword and summary enrichers both parse the same description of a ticket, and
    the result is immutable.
    """
    if markup and looks_like_html(text):
        text = strip_markup(_html_body(text), entities=False)
    elif markup:
        text = strip_markup(text)
    else:
        text = text[:MAX_INPUT_CHARS].replace("\r\n", "\n")
    lines = text.split("\n")
    unquoted = [line for line in lines if not _QUOTED.match(line)]
    if any(line.strip() for line in unquoted):
        lines = unquoted
    else:  # a message that is all quote (a forward quoted with ">"): keep it, unmarked
        lines = [line.lstrip(" \t>") for line in lines]
    subjects: list[str] = []
    kept: list[str] = []
    for message in _split_messages(lines, subjects):
        kept.extend(_clean_message(message))
        kept.append("")
    return CleanedEmail(body=tidy("\n".join(kept)), subjects=tuple(subjects))


def _html_body(html_text: str) -> str:
    """An HTML e-mail as text: its reply chain cut when its own text can stand alone."""
    own, chain = split_html_reply(html_text)
    if not chain:
        return own
    # ``own`` is plain text now (no tag survives html_text), so this does not recurse again.
    if len(_WORD.findall(parse_email(own).body)) < MIN_OWN_WORDS:
        return f"{own}\n\n{chain}"
    return f"{own}\n\n{_leading_header_block(chain)}"


def _leading_header_block(chain: str) -> str:
    """The header block opening a cut chain (after any separator line), for its Subject."""
    lines = chain.split("\n")[:16]
    start = 1 if lines and _SEPARATOR.match(lines[0]) else 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    if start >= len(lines):
        return ""
    end = _header_block_end(lines, start)
    return "\n".join(lines[start:end])


def _split_messages(lines: list[str], subjects: list[str]) -> list[list[str]]:
    """Split a thread at forwarded/quoted header blocks, dropping the blocks themselves."""
    messages: list[list[str]] = [[]]
    i = 0
    while i < len(lines):
        line = lines[i]
        end = _header_block_end(lines, i)
        if end > i:
            for header in lines[i:end]:
                match = _SUBJECT_LINE.match(header)
                if match and match.group(1).strip():
                    subjects.append(match.group(1).strip())
            messages.append([])
            i = end
            continue
        tail = line.rstrip()[-1:]
        if (tail in "-_" and _SEPARATOR.match(line)) or (tail == ":" and _WROTE.match(line)):
            messages.append([])
        else:
            messages[-1].append(line)
        i += 1
    return messages


def _header_block_end(lines: list[str], start: int) -> int:
    """Index after a header block starting at ``start`` ("From:" + another header), else start."""
    if not _HEADER_START.match(lines[start]):
        return start
    end = start + 1
    while end < len(lines) and end - start < 12 and _header_or_blank(lines, end):
        end += 1
    block = lines[start + 1 : end]
    distinct = any(_HEADER_DISTINCT.match(line) for line in block)
    return end if distinct and sum(1 for line in block if _HEADER_LINE.match(line)) >= 1 else start


def _header_or_blank(lines: list[str], idx: int) -> bool:
    """True if the line continues a header block (a header, or a blank before more headers)."""
    if _HEADER_LINE.match(lines[idx]):
        return True
    following = lines[idx + 1] if idx + 1 < len(lines) else ""
    return not lines[idx].strip() and bool(_HEADER_LINE.match(following))


def _clean_message(lines: list[str]) -> list[str]:
    """Drop greeting, disclaimer paragraphs, and everything from the sign-off on."""
    out: list[str] = []
    seen_text = in_disclaimer = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            out.append("")
            in_disclaimer = False
            continue
        if _SIGNOFF.match(stripped) or _MOBILE_SIG.match(stripped):
            break  # the rest of this message is the signature: name, title, phone
        if in_disclaimer or _is_disclaimer(stripped):
            in_disclaimer = True  # drop the whole (hard-wrapped) paragraph
            continue
        if not seen_text:
            if _GREETING_LINE.match(stripped):
                continue
            stripped = strip_greeting(stripped)
            if not stripped:
                continue
        seen_text = True
        out.append(stripped)
    return out


def _is_disclaimer(line: str) -> bool:
    """True if the line opens a confidentiality/external-sender notice (cheap test first)."""
    lower = line.lower()
    return any(hint in lower for hint in _DISCLAIMER_HINTS) and bool(_DISCLAIMER.search(lower))


def is_greeting(line: str) -> bool:
    """True if the line is only a greeting ("Hi team,", "Hej Peter", "Hallo zusammen")."""
    return bool(_GREETING_LINE.match(line.strip()))


def strip_greeting(line: str) -> str:
    """Remove a leading greeting followed by a comma/colon/"!" ("Hi John, the VPN ...")."""
    if is_greeting(line):
        return ""
    return _GREETING_PREFIX.sub("", line, count=1).strip()
