"""Sentences and subject lines: split cleaned text into sentences; clean and judge titles.

``split_sentences`` is aware of hard-wrapped e-mail lines and of abbreviations in English,
Danish, Swedish and German; ``clean_title`` strips "RE:/FW:" prefixes, external-sender tags and
ticket numbers, and ``is_informative_title`` says whether a title says anything specific.
Pure; ``enrichers.text`` re-exports every public name.
"""

from __future__ import annotations

import re

__all__ = ["clean_title", "is_informative_title", "split_sentences"]

# Informal e-mail often starts sentences in lower case, so any word may follow the stop.
_BOUNDARY = re.compile(r"[.!?…]+[\"')\]]*\s+(?=[\"'(\[]?[^\W_])|[.!?…]+\s*$")
# Dotted abbreviations that do not end a sentence (trailing dot removed, lower case).
_ABBREVIATIONS = frozenset(
    re.findall(
        r"\S+",
        "e.g i.e etc vs mr mrs ms dr prof nr no inc ltd approx ca z.b bzw d.h u.a usw ggf inkl "
        "evtl f.eks bl.a dvs m.m mht osv t.ex s.k kl jf el resp",
    )
)
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; a line break ends a sentence unless the line was wrapped."""
    sentences: list[str] = []
    for paragraph in _unwrap(text).split("\n"):
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            if match.group().strip() and _is_abbreviation(paragraph, match.start()):
                continue
            piece = paragraph[start : match.end()].strip()
            if piece:
                sentences.append(piece)
            start = match.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def _unwrap(text: str) -> str:
    """Join hard-wrapped lines: the next line starts lower-case or the line ends mid-clause."""
    lines = [line.strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        prev = out[-1] if out else ""
        if prev and line and prev[-1] not in ".!?:" and (line[0].islower() or prev[-1] in ",;-(/&"):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return "\n".join(out)


def _is_abbreviation(text: str, dot: int) -> bool:
    """True when the punctuation at ``dot`` ends an abbreviation or an ordinal ("3. Mai")."""
    # A bounded look-behind window: searching from 0 would make long lines quadratic.
    match = _WORD_BEFORE.search(text, max(0, dot - 12), dot)
    if not match:
        return False
    word = match.group(1).lower().rstrip(".")
    return word in _ABBREVIATIONS or (word.isdigit() and len(word) <= 2 and text[dot] == ".")


# --- subject lines / titles -------------------------------------------------------------------------------------
_TITLE_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|sv|vs|aw|wg|tr|antw|vb|videresend|vidarebefordra)\s*(?:\[\d+\])?\s*:"
    r"|\[(?:external|extern|ekstern|ext)\]|\((?:external|extern|ekstern)\))\s*",
    re.IGNORECASE,
)
_TICKET_REF = re.compile(r"\b(?:INC|REQ|RITM|CS|CAS|TASK)\d{5,}\b|\s*\b(?:ticket|case)\s*#\s*\d+")
# Words that make a title unspecific on their own ("Help", "Problem", "Urgent!").
_GENERIC_WORDS = frozenset(
    re.findall(
        r"\S+",
        "help hjælp hjälp hilfe issue issues problem problems problemer problemen question "
        "questions fråga frage spørgsmål request requests anmodning förfrågan anfrage support "
        "urgent akut dringend brådskande ticket sag ärende error fejl fel fehler bug please "
        "venligst hi hello hej hallo test none n/a na no subject untitled",
    )
)
_TITLE_WORDS = re.compile(r"[^\W_]+")


def clean_title(title: str) -> str:
    """Strip reply/forward prefixes, external-sender tags and ticket numbers from a title."""
    previous = None
    title = " ".join(title.split())
    while previous != title:
        previous = title
        title = _TITLE_PREFIX.sub("", title)
    return " ".join(_TICKET_REF.sub(" ", title).split()).strip(" -:|")


def is_informative_title(title: str) -> bool:
    """True if a cleaned title says something specific (not "Help", "Problem", "FW:")."""
    words = [w.lower() for w in _TITLE_WORDS.findall(title)]
    specific = [w for w in words if w not in _GENERIC_WORDS and not w.isdigit()]
    return len(specific) >= 2 or (len(specific) == 1 and len(specific[0]) >= 6 and len(words) >= 2)
