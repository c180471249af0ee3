"""The summary enricher: a short description (≤160 chars) for tickets that arrive without one.

The enricher prefers a good human title (cleaned of "RE:"/"FW:" noise). Otherwise it asks an
injected ``Summarizer``; the default ``ExtractiveSummarizer`` is pure and fast: it strips e-mail
boilerplate, scores the remaining sentences (position, problem/request words in English, Danish,
Swedish and German, length, noise) and compresses the best one to a compact phrase.
An abstractive summarizer (``enrichers.azure_openai``) fits behind the same protocol, usually
wrapped in ``FallbackSummarizer(primary, ExtractiveSummarizer())``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from domain.errors import AuthError, EnrichmentError, ThrottledError
from domain.models import SUMMARY_MAX_CHARS, Suggestion, Ticket
from domain.sanitize import sanitize_value
from enrichers.text import clean_title, is_informative_title, parse_email, split_sentences

if TYPE_CHECKING:
    from enrichers.summary_model import SummaryModel

__all__ = [
    "ExtractiveSummarizer",
    "FallbackSummarizer",
    "Summarizer",
    "SummaryCandidate",
    "SummaryEnricher",
    "clip",
    "compress",
    "sentence_score",
]

log = logging.getLogger(__name__)

TITLE_CONFIDENCE = 0.95
SUBJECT_CONFIDENCE = 0.8


@dataclass(frozen=True)
class SummaryCandidate:
    """A proposed short description, how sure we are of it, and how it was made (no ticket text)."""

    text: str
    confidence: float
    method: str
    detail: str = ""


@runtime_checkable
class Summarizer(Protocol):
    """Turns a (possibly empty) title and a raw description into a short description, or None."""

    name: str

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """Return a candidate of at most SUMMARY_MAX_CHARS characters, or None to abstain."""
        ...


# --- compression -------------------------------------------------------------------------------
_I = re.IGNORECASE
_WORDS = re.compile(r"[^\W_]+")
_LEADING_FILLER = re.compile(
    # Only English discourse words: Danish/Swedish/German are verb-second, so dropping a
    # leading "Leider"/"Desværre" would leave a sentence that reads like a question.
    r"^(?:(?:so|also|and|but|then|basically|unfortunately|however|anyway)\b[\s,:]*"
    r"|(?:ok|okay|well),\s*"
    r"|i(?:'m| am)\s+(?:writing|contacting\s+you|reaching\s+out|emailing)\s+(?:to|because|"
    r"regarding|about)(?:\s+(?:let\s+you\s+know|inform\s+you|report|ask))?(?:\s+(?:that|about|"
    r"if|whether))?\s+"
    r"|i(?:\s+would|'d)\s+like\s+to\s+(?:report|inform\s+you|let\s+you\s+know|ask)(?:\s+(?:that"
    r"|about|if|whether))?\s+"
    r"|(?:i|we)(?:\s+would|'d)\s+(?:like|love)\s+to(?:\s+(?:be\s+able\s+to|have|see|get|"
    r"request))?\s+"
    r"|(?:i|we)\s+(?:want|need)\s+to(?:\s+be\s+able\s+to)?\s+"
    r"|it\s+would\s+be\s+(?:nice|great|good|helpful|useful|awesome)\s+(?:if\s+(?:we|i|you)\s+"
    r"could|to(?:\s+be\s+able\s+to)?|if)\s+"
    r"|is\s+(?:it|there)\s+(?:possible|a\s+way)\s+to\s+"
    r"|i\s+(?:just\s+)?wanted\s+to\s+(?:let\s+you\s+know|ask|report|inform\s+you)(?:\s+(?:that"
    r"|about|if|whether))?\s+"
    r"|(?:just\s+)?(?:a\s+)?quick\s+question\b[\s:,-]*"
    r"|(?:could|can|would|will)\s+(?:you|someone|somebody|anyone)(?:\s+(?:please|kindly))?"
    r"(?:\s+(?:help(?:\s+me)?(?:\s+(?:to|with))?|check|look\s+into|have\s+a\s+look\s+at))?\s+"
    r"|please(?:\s+kindly)?\b[\s,]*|kindly\s+"
    r"|i\s+(?:have\s+)?(?:noticed|found|realized|realised|think|believe)\s+that\s+"
    r"|it\s+(?:seems|looks)\s+(?:like|that|as\s+if)\s+"
    r"|jeg\s+(?:vil|ville)\s+gerne\s+(?:bede\s+om|spørge\s+om|have)?\s*"
    r"|jeg\s+(?:har\s+brug\s+for|skal\s+bruge)(?:\s+at)?\s+"
    r"|jeg\s+skriver\s+(?:fordi|for\s+at)\s+"
    r"|(?:kan|vil)\s+(?:i|du|nogen)(?:\s+venligst)?(?:\s+hjælpe(?:\s+mig)?(?:\s+med(?:\s+at)?)?)?\s+"
    r"|venligst\s+|vær\s+venlig\s+at\s+"
    r"|jag\s+(?:skulle\s+vilja|vill\s+gärna|vill)\s+(?:be\s+om|fråga\s+om|ha)?\s*"
    r"|(?:kan|skulle)\s+(?:ni|du|någon)(?:\s+vänligen)?(?:\s+hjälpa(?:\s+mig)?(?:\s+med(?:\s+att)?"
    r")?)?\s+|vänligen\s+|jag\s+behöver(?:\s+att)?\s+"
    r"|ich\s+(?:möchte|würde\s+gerne|wollte)(?:\s+gerne)?(?:\s+(?:fragen,?\s+ob|bitten\s+um|"
    r"melden,?\s+dass))?\s+"
    r"|ich\s+(?:brauche|benötige)\s+"
    r"|ich\s+schreibe,?\s+(?:weil|da)\s+"
    r"|(?:könnten|können|könntest|kannst)\s+(?:sie|du|ihr)(?:\s+bitte)?(?:\s+mir)?(?:\s+helfen,?)?"
    r"\s+|bitte\s+)",
    _I,
)
_TRAILING_FILLER = re.compile(
    r"(?:[\s,;:-]+(?:please|pls|thanks?(?:\s+you)?(?:\s+in\s+advance)?|thx|tak|tack|danke|bitte|"
    r"venligst|vänligen))?[\s.!,;:]*$",
    _I,
)
_CLAUSE_BREAK = re.compile(
    r"[,;:]\s+|\s+[-–—(]\s*|\s+(?:because|since|which|but|as|so|and|men|"
    r"fordi|da|og|eller|som|eftersom|och|weil|aber|und|oder|da)\s+",
    _I,
)
_MIN_CLAUSE_CHARS = 25
_ELLIPSIS = "…"


def compress(sentence: str) -> str:
    """Drop leading fillers ("Could you please", "Jeg vil gerne") and trailing thanks/"please"."""
    text = " ".join(sentence.split())
    was_request = False
    for _ in range(3):
        stripped = _LEADING_FILLER.sub("", text, count=1)
        if stripped == text or not stripped:
            break
        was_request = True
        text = stripped
    if was_request:  # "Could you please reset my password?" is an instruction now
        text = _TRAILING_FILLER.sub("", text).rstrip("?").rstrip()
    elif not text.endswith("?"):
        text = _TRAILING_FILLER.sub("", text)
    return _capitalise(text)


def clip(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """Cut text to ``limit`` chars at a word boundary, marking the cut with "…"."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[: limit - len(_ELLIPSIS)]
    space = head.rfind(" ")
    if space >= limit // 2:  # a 50k-char "word" is cut inside the word instead
        head = head[:space]
    return head.rstrip(" ,;:-–—(") + _ELLIPSIS


def _capitalise(text: str) -> str:
    """Upper-case the first character if it is a lower-case letter."""
    return text[:1].upper() + text[1:] if text[:1].islower() else text


# --- scoring -----------------------------------------------------------------------------------
# Cues are matched on the lower-cased sentence: single words by set lookup (fast), multi-word
# phrases by one case-sensitive regex. "Strong" problem words say something is broken; "weak"
# ones (issue, problem) are as often meta ("this issue describes ...").
def _vocabulary(text: str) -> frozenset[str]:
    """A frozen set of the whitespace-separated words of ``text``."""
    return frozenset(text.split())


_STRONG_PROBLEM_WORDS = _vocabulary(
    "error errors fail fails failed failing failure crash crashes crashed crashing cannot unable "
    "broken stuck freeze freezes freezing frozen hang hangs hanging denied locked expired "
    "exception incorrect fejl fejler fejlen fejlede låst hænger nede fel felet låst hänger "
    "saknas krasch kraschar kraschade fehler fehlermeldung absturz stürzt gesperrt fehlt "
    "ausgefallen hängt"
)
_WEAK_PROBLEM_WORDS = _vocabulary(
    "issue issues problem problems bug bugs wrong missing slow down unexpected unexpectedly "
    "problemer problemet langsom langsomt mangler problemen långsam långsamt langsam"
)
_REQUEST_WORDS = _vocabulary(
    "please need needs request requesting allow enable install access reset create setup order "
    "add unlock venligst bedes ønsker hvordan adgang nulstil nulstille oprette bestille "
    "installere vänligen behöver hur åtkomst behörighet återställ återställa beställa "
    "installera bitte brauche benötige möchte zugriff zugang zurücksetzen einrichten bestellen "
    "installieren freischalten"
)
_PROBLEM_PHRASE = re.compile(
    r"\b(?:can't|can\s+not|won't|(?:does|do|is|are|was|did)(?:n't|\s+not)\s+(?:work|load|open|start|show"
    r"|respond|sync|print|connect|appear|save|send)\w*|not\s+(?:working|loading|opening|starting"
    r"|showing|responding|syncing|printing|connecting|able)|stopped\s+working|no\s+longer|"
    r"virker\s+ikke|fungerer\s+ikke|kan\s+ikke|går\s+ned|fungerar\s+inte|funkar\s+inte|"
    r"kan\s+inte|går\s+inte|funktioniert\s+nicht|geht\s+nicht|kann\s+nicht|klappt\s+nicht)\b"
)
_REQUEST_PHRASE = re.compile(
    r"\b(?:would\s+like|want\s+to|how\s+(?:do|can|to|should)|is\s+(?:it|there)\s+(?:possible|"
    r"a\s+way)|support\s+for|set\s+up|brug\s+for|vil\s+gerne|skulle\s+vilja|wie\s+kann)\b"
)
_META = re.compile(
    r"(?:thanks?|thank\s+you|many\s+thanks|i\s+hope|hope\s+(?:you|this|all)|appreciate|"
    r"any\s+help|please\s+(?:let\s+me\s+know|advise|see|find)|let\s+me\s+know|looking\s+forward|"
    r"(?:please\s+)?see\s+(?:the\s+)?(?:attached|attachment|below|above|screenshot)|attached|"
    r"fyi|any\s+updates?|following\s+up|as\s+discussed|per\s+our|in\s+advance|kindly\s+find|"
    r"tak|mange\s+tak|på\s+forhånd|jeg\s+håber|se\s+vedhæftede|vedhæftet|hører\s+fra|"
    r"tack|hoppas|se\s+bifogad|bifogar|hör\s+av|danke|vielen\s+dank|ich\s+hoffe|"
    r"siehe\s+anhang|anbei|im\s+anhang|ich\s+freue\s+mich)\b"
)
_KEY_VALUE = re.compile(r"[\w /().-]{1,30}:\s*\S")
# A forwarded e-mail's subject line is a title a person wrote: worth more than a sentence.
_SUBJECT_BONUS = 0.5
_POSITION_DECAY = 0.3
_CUE_BONUS = {"problem": 0.8, "request": 0.5, "weak": 0.35}


@dataclass(frozen=True)
class _Cue:
    kind: str  # "problem", "request" or "weak"
    word: str
    start: int
    end: int


@dataclass(frozen=True)
class _Scored:
    score: float
    index: int
    text: str
    cue: _Cue | None


def _find_cue(lower: str, words: list[str]) -> _Cue | None:
    """The strongest problem/request cue of a lower-cased sentence, with its position."""
    if phrase := _PROBLEM_PHRASE.search(lower):
        return _Cue("problem", phrase.group(), phrase.start(), phrase.end())
    for kind, vocabulary in (
        ("problem", _STRONG_PROBLEM_WORDS),
        ("request", _REQUEST_WORDS),
        ("weak", _WEAK_PROBLEM_WORDS),
    ):
        word = next((w for w in words if w in vocabulary), None)
        if kind == "request" and word is None and (phrase := _REQUEST_PHRASE.search(lower)):
            return _Cue(kind, phrase.group(), phrase.start(), phrase.end())
        if word is not None:
            start = lower.find(word)
            return _Cue(kind, word, start, start + len(word))
    return None


def _score(sentence: str, index: int, hint_words: frozenset[str]) -> _Scored:
    """Score one sentence: early, about a problem or a request, prose-like, not too long."""
    lower = sentence.lower()
    words = _WORDS.findall(lower)
    n = len(words)
    letters = sum(len(w) for w in words if not w.isdigit())
    score = 1.0 / (1.0 + _POSITION_DECAY * index)
    cue = _find_cue(lower, words)
    if cue is not None:
        score += _CUE_BONUS[cue.kind]
    if _META.match(lower):
        score -= 1.5
    if _KEY_VALUE.match(lower):
        score -= 0.5
    if n < 3:
        score -= 1.2
    elif n < 5:
        score -= 0.4
    elif n > 30:
        score -= min(0.6, 0.02 * (n - 30))
    if letters < 0.6 * len(sentence):  # code, paths, log lines, tables
        score -= 1.0
    if hint_words:
        overlap = sum(1 for w in words if w in hint_words)
        score += 0.6 * min(1.0, overlap / len(hint_words))
    return _Scored(score, index, sentence, cue)


def sentence_score(sentence: str, index: int) -> float:
    """The extractive summarizer's score of one sentence at position ``index`` (no title hint).

    The learned summary (``enrichers.summary_model``) uses it as one of its features.
    """
    return _score(sentence, index, frozenset()).score


def _focus(best: _Scored, target: int) -> str:
    """Cut a long sentence to the clauses around its cue, about ``target`` chars."""
    text = best.text
    if len(text) <= target:
        return text
    cue = best.cue
    if cue is not None and cue.end > target:
        # Start at the clause holding the cue, so the problem itself survives the cut.
        starts = [m.end() for m in _CLAUSE_BREAK.finditer(text, 0, cue.start)]
        text = text[starts[-1] :] if starts else text
        cue = _Cue(cue.kind, cue.word, 0, 0)
    min_end = max(_MIN_CLAUSE_CHARS, cue.end if cue else 0)
    ends = [m.start() for m in _CLAUSE_BREAK.finditer(text, min_end, target + 1)]
    return text[: ends[-1]] if ends else text


class ExtractiveSummarizer:
    """Picks and compresses the most ticket-like sentence of the cleaned e-mail. Pure and fast."""

    name = "extractive"

    def __init__(self, *, target_chars: int = 100, max_sentences: int = 30) -> None:
        self.target_chars = min(target_chars, SUMMARY_MAX_CHARS)
        self.max_sentences = max_sentences

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """Return the best sentence of ``text`` as a short description, or None if too little."""
        email = parse_email(text)
        sentences = split_sentences(email.body)[: self.max_sentences]
        content_words = sum(len(_WORDS.findall(s)) for s in sentences)
        hint = frozenset(w.lower() for w in _WORDS.findall(clean_title(title)) if len(w) > 2)
        scored = [_score(s, i, hint) for i, s in enumerate(sentences)]
        subjects = [clean_title(s) for s in email.subjects]
        scored += [
            _Scored(_score(s, 0, hint).score + _SUBJECT_BONUS, -1, s, None)
            for s in subjects
            if is_informative_title(s)
        ]
        if not scored or (content_words < 3 and not subjects):
            return None
        best = max(scored, key=lambda c: c.score)
        summary = clip(compress(_focus(best, self.target_chars)))
        if len(_WORDS.findall(summary)) < 2 or best.score < -1.0:
            return None
        return SummaryCandidate(
            text=summary,
            confidence=_confidence(best, content_words, summary),
            method=self.name,
            detail=_detail(best, len(sentences)),
        )


def _confidence(best: _Scored, content_words: int, summary: str) -> float:
    """More usable text and a clear problem/request sentence → higher; truncation → lower."""
    if best.index < 0:  # a forwarded e-mail's subject: a person's own title
        return SUBJECT_CONFIDENCE
    strong = best.cue is not None and best.cue.kind != "weak"
    confidence = 0.45 + min(0.15, content_words / 100) + (0.15 if strong else 0.0)
    if summary.endswith(_ELLIPSIS):
        confidence -= 0.1
    if best.score < 0.5:
        confidence -= 0.15
    return round(max(0.1, min(0.85, confidence)), 2)


def _detail(best: _Scored, total: int) -> str:
    """A reason that names the sentence position and cue word (a fixed vocabulary, not text)."""
    if best.index < 0:
        return "subject line of a forwarded e-mail in the description"
    cue = f", cue '{best.cue.word}'" if best.cue else ""
    return f"sentence {best.index + 1} of {total} of the cleaned e-mail{cue}"


# --- composition -------------------------------------------------------------------------------
class FallbackSummarizer:
    """Tries ``primary`` (e.g. a remote LLM); on an error or abstention uses ``fallback``.

    After a 429 (or an auth failure, which will not fix itself quickly) the primary is skipped
    for a cool-down, so a backfill does not hammer a throttled endpoint ticket after ticket.
    """

    def __init__(
        self,
        primary: Summarizer,
        fallback: Summarizer,
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle_cooldown_s: float = 30.0,
        auth_cooldown_s: float = 300.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = f"{primary.name}+{fallback.name}"
        self._clock = clock
        self._throttle_cooldown_s = throttle_cooldown_s
        self._auth_cooldown_s = auth_cooldown_s
        self._skip_until = -math.inf

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        """The primary's candidate, else the fallback's."""
        if self._clock() >= self._skip_until:
            try:
                candidate = self.primary.summarize(title, text)
            except EnrichmentError as exc:
                self._note_failure(exc)
            else:
                if candidate is not None:
                    return candidate
        return self.fallback.summarize(title, text)

    def _note_failure(self, exc: EnrichmentError) -> None:
        """Log the failure (type and status only) and start a cool-down where one helps."""
        cooldown = 0.0
        if isinstance(exc, ThrottledError):
            cooldown = exc.retry_after_s or self._throttle_cooldown_s
        elif isinstance(exc, AuthError):
            cooldown = self._auth_cooldown_s
        if cooldown:
            self._skip_until = self._clock() + cooldown
        log.warning(
            "summarizer %s failed (%s: %s); using %s, primary paused %.0f s",
            self.primary.name,
            type(exc).__name__,
            getattr(exc, "status_code", None),
            self.fallback.name,
            cooldown,
        )


class SummaryEnricher:
    """Suggests ``summary``: the cleaned human title if it is informative, else a summary.

    Without a ``summarizer`` it uses the learned summary of ``model`` (an
    ``enrichers.summary_model.SummaryModel`` trained on the desk's own titles) when given,
    else the extractive one.
    """

    def __init__(
        self,
        summarizer: Summarizer | None = None,
        *,
        model: SummaryModel | None = None,
        name: str = "summary",
    ) -> None:
        if summarizer is None and model is not None:
            from enrichers.summary_model import LearnedSummarizer

            summarizer = LearnedSummarizer(model)
        self.summarizer: Summarizer = summarizer or ExtractiveSummarizer()
        self.name = name

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> dict[str, str]:
        """Why no summary, without running the summarizer again (it may be a remote model)."""
        title = sanitize_value(clean_title(ticket.title), max_chars=SUMMARY_MAX_CHARS)
        if is_informative_title(title):
            return {}  # the title is the summary: enrich never abstains here
        if not ticket.description.strip():
            what = "no title and" if not ticket.title.strip() else "an uninformative title and"
            return {"summary": f"{what} no description to summarise"}
        return {
            "summary": f"{self.summarizer.name} found too little usable text "
            "(greetings, signatures, quotes and markup are not summarised)"
        }

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        """One summary suggestion, or nothing when there is too little text."""
        # A title that is all markup ("<img src=x onerror=...>") says nothing: summarise instead.
        title = sanitize_value(clean_title(ticket.title), max_chars=SUMMARY_MAX_CHARS)
        candidate: SummaryCandidate | None
        if is_informative_title(title):
            candidate = SummaryCandidate(
                title, TITLE_CONFIDENCE, "title", "the ticket's own title, cleaned"
            )
        else:
            candidate = self.summarizer.summarize(ticket.title, ticket.description)
        # The value is what would be written: no markup, no control chars, no note prefix.
        value = sanitize_value(candidate.text, max_chars=SUMMARY_MAX_CHARS) if candidate else ""
        if candidate is None or not value:
            return []
        reason = f"{candidate.method}: {candidate.detail}" if candidate.detail else candidate.method
        return [
            Suggestion(
                field="summary",
                value=value,
                confidence=max(0.0, min(1.0, candidate.confidence)),
                reason=reason[:300],
                source=self.name,
            )
        ]
