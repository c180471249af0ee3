"""The extractive summary's rules: sentence compression, clipping and sentence scoring.

``compress`` drops leading fillers ("Could you please", "Jeg vil gerne") and trailing thanks;
``clip`` cuts at a word boundary; ``score_sentence`` scores one sentence (position,
problem/request cue words in English, Danish, Swedish and German, length, noise) and ``focus``
cuts a long one to the clauses around its cue. ``enrichers.summary.ExtractiveSummarizer`` is
built from these, and the learned summary (``enrichers.summary_units``) uses ``compress``,
``clip`` and ``sentence_score``; ``enrichers.summary`` re-exports its public names. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.models import SUMMARY_MAX_CHARS

__all__ = [
    "ELLIPSIS",
    "SUBJECT_BONUS",
    "WORDS",
    "Cue",
    "ScoredSentence",
    "clip",
    "compress",
    "focus",
    "score_sentence",
    "sentence_score",
]


# --- compression -------------------------------------------------------------------------------
_I = re.IGNORECASE
WORDS = re.compile(r"[^\W_]+")
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
ELLIPSIS = "…"


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
    head = text[: limit - len(ELLIPSIS)]
    space = head.rfind(" ")
    if space >= limit // 2:  # a 50k-char "word" is cut inside the word instead
        head = head[:space]
    return head.rstrip(" ,;:-–—(") + ELLIPSIS


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
SUBJECT_BONUS = 0.5
_POSITION_DECAY = 0.3
_CUE_BONUS = {"problem": 0.8, "request": 0.5, "weak": 0.35}


@dataclass(frozen=True)
class Cue:
    """A problem/request cue found in a sentence: its kind, the word or phrase, its span."""

    kind: str  # "problem", "request" or "weak"
    word: str
    start: int
    end: int


@dataclass(frozen=True)
class ScoredSentence:
    """A sentence's score, position (-1: a forwarded subject line), text and cue."""

    score: float
    index: int
    text: str
    cue: Cue | None


def _find_cue(lower: str, words: list[str]) -> Cue | None:
    """The strongest problem/request cue of a lower-cased sentence, with its position."""
    if phrase := _PROBLEM_PHRASE.search(lower):
        return Cue("problem", phrase.group(), phrase.start(), phrase.end())
    for kind, vocabulary in (
        ("problem", _STRONG_PROBLEM_WORDS),
        ("request", _REQUEST_WORDS),
        ("weak", _WEAK_PROBLEM_WORDS),
    ):
        word = next((w for w in words if w in vocabulary), None)
        if kind == "request" and word is None and (phrase := _REQUEST_PHRASE.search(lower)):
            return Cue(kind, phrase.group(), phrase.start(), phrase.end())
        if word is not None:
            start = lower.find(word)
            return Cue(kind, word, start, start + len(word))
    return None


def score_sentence(sentence: str, index: int, hint_words: frozenset[str]) -> ScoredSentence:
    """Score one sentence: early, about a problem or a request, prose-like, not too long."""
    lower = sentence.lower()
    words = WORDS.findall(lower)
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
    return ScoredSentence(score, index, sentence, cue)


def sentence_score(sentence: str, index: int) -> float:
    """The extractive summarizer's score of one sentence at position ``index`` (no title hint).

    The learned summary (``enrichers.summary_model``) uses it as one of its features.
    """
    return score_sentence(sentence, index, frozenset()).score


def focus(best: ScoredSentence, target: int) -> str:
    """Cut a long sentence to the clauses around its cue, about ``target`` chars."""
    text = best.text
    if len(text) <= target:
        return text
    cue = best.cue
    if cue is not None and cue.end > target:
        # Start at the clause holding the cue, so the problem itself survives the cut.
        starts = [m.end() for m in _CLAUSE_BREAK.finditer(text, 0, cue.start)]
        text = text[starts[-1] :] if starts else text
        cue = Cue(cue.kind, cue.word, 0, 0)
    min_end = max(_MIN_CLAUSE_CHARS, cue.end if cue else 0)
    ends = [m.start() for m in _CLAUSE_BREAK.finditer(text, min_end, target + 1)]
    return text[: ends[-1]] if ends else text
