"""The extractive summarizer, the fallback chain, the summary enricher and ROUGE-L."""

from __future__ import annotations

import pytest

from bench.rouge import lcs_length, rouge_l_f1, tokenize
from domain.errors import AuthError, RejectedError, ThrottledError, UnavailableError
from domain.models import SUMMARY_MAX_CHARS, Ticket
from enrichers.base import Enricher
from enrichers.summary import (
    ExtractiveSummarizer,
    FallbackSummarizer,
    Summarizer,
    SummaryCandidate,
    SummaryEnricher,
    clip,
    compress,
)
from enrichers.text import clean_title, is_informative_title

ENGLISH = """Hi team,

I hope you are well. I am writing to let you know that my laptop cannot connect to the VPN since
this morning. I get error 809.
Could you please have a look?

Best regards
John Smith
IT Manager | +45 12 34 56 78
"""

summarizer = ExtractiveSummarizer()


def summarize(text: str, title: str = "") -> SummaryCandidate | None:
    return summarizer.summarize(title, text)


# --- picking the right sentence ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ENGLISH, "My laptop cannot connect to the VPN since this morning"),
        (
            "Hej,\n\nJeg vil gerne bede om adgang til økonomisystemet.\n\nMvh\nMette",
            "Adgang til økonomisystemet",
        ),
        (
            "Hej!\nTack för senast. Skrivaren på plan 2 fungerar inte.\nMed vänliga hälsningar\nAnna",
            "Skrivaren på plan 2 fungerar inte",
        ),
        (
            "Hallo zusammen,\n\nvielen Dank für die Hilfe. Outlook stürzt beim Start ab.\n\n"
            "Mit freundlichen Grüßen\nHans",
            "Outlook stürzt beim Start ab",
        ),
        ("Könnten Sie bitte mein Passwort zurücksetzen?\nDanke", "Mein Passwort zurücksetzen"),
        (
            "Good morning,\nThanks for yesterday. Could you please install Visio on my PC?\nThanks",
            "Install Visio on my PC",
        ),
    ],
)
def test_summary_is_the_problem_or_request_not_the_greeting_or_thanks(text, expected):
    candidate = summarize(text)
    assert candidate is not None
    assert candidate.text == expected
    assert candidate.method == "extractive"


def test_a_forwarded_subject_beats_a_contentless_cover_note():
    text = (
        "FYI\n\nFrom: Jane\nSent: Monday\nTo: Helpdesk\n"
        "Subject: RE: Printer on 3rd floor jams constantly\n\nHi, see above. Thanks"
    )
    candidate = summarize(text)
    assert candidate is not None
    assert candidate.text == "Printer on 3rd floor jams constantly"
    assert candidate.confidence == 0.8


def test_a_long_sentence_is_cut_to_the_clause_that_holds_the_problem():
    text = (
        "At some point during the last five months or so, after several updates of the "
        "browser, the developer tools extension stopped working in normal windows."
    )
    candidate = summarize(text)
    assert candidate is not None
    assert "stopped working" in candidate.text
    assert len(candidate.text) <= 100


def test_a_weak_title_steers_the_choice_between_sentences():
    text = "The scanner on floor two fails. The printer on floor two fails too."
    plain, hinted = summarize(text), summarize(text, title="Printer")
    assert plain is not None and hinted is not None
    assert plain.text.startswith("The scanner")
    assert hinted.text.startswith("The printer")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n ",
        "Hi team,",
        "Hej\n\nMvh\nMette",
        "Thanks!\nJohn",
        "https://example.com/x",
        "```\nprint(1)\n```",
        "x" * 50_000,
        "<!-- only a template comment -->",
    ],
)
def test_abstains_when_there_is_no_usable_text(text):
    assert summarize(text) is None


NASTY = [
    "a" * 50_000,
    "word " * 20_000,
    ("This sentence has no end and keeps going " * 40).strip(),
    "Error: " + "x" * 500 + " cannot connect",
    "Fejl! " * 3000,
    "🙂🙂🙂 the printer 🖨️ is broken 🙂" * 30,
    "Die Verbindung zum Server funktioniert nicht" + ", und auch nicht danach" * 30,
    "\n".join(f"Line {i} fails with error {i}" for i in range(5000)),
    "a b c d e f g h i j k l m n o p q r s t u v w x y z " * 50,
    "Ünïcödé " * 200,
    "x" * 159 + " y",
    "One.Two.Three." * 500,
    "\u200b\u00a0 The VPN is down \u00a0\u200b" * 80,
    "> " * 1000 + "the printer is broken",
]


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
@pytest.mark.parametrize("title", ["", "Help", "x" * 500 + " the printer is jammed again today"])
def test_summary_never_exceeds_the_limit(text, title):
    candidate = summarize(text, title)
    suggestions = SummaryEnricher().enrich(Ticket(title=title, description=text), {})
    if candidate is not None:
        assert 0 < len(candidate.text) <= SUMMARY_MAX_CHARS
        assert 0.0 <= candidate.confidence <= 1.0
    for suggestion in suggestions:
        assert 0 < len(suggestion.value) <= SUMMARY_MAX_CHARS


def test_confidence_grows_with_usable_text_and_a_clear_problem():
    thin = summarize("Something about the portal.")
    rich = summarize(ENGLISH)
    assert thin is not None and rich is not None
    assert thin.confidence < rich.confidence <= 0.85


def test_summarizer_is_deterministic_and_reports_no_ticket_text_in_its_detail():
    first, second = summarize(ENGLISH), summarize(ENGLISH)
    assert first == second
    assert first is not None
    assert "laptop" not in first.detail and "John" not in first.detail
    assert "cue 'cannot'" in first.detail


# --- compress / clip / titles ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentence", "compressed"),
    [
        ("I am writing to let you know that the VPN is down.", "The VPN is down"),
        ("Could you please reset my password?", "Reset my password"),
        ("Please install Teams, thanks!", "Install Teams"),
        ("I would like to be able to disable autosave.", "Disable autosave"),
        ("Is it possible to add a second monitor?", "Add a second monitor"),
        ("Jeg vil gerne bede om en ny skærm.", "En ny skærm"),
        ("Kan I hjælpe med at nulstille min kode?", "Nulstille min kode"),
        ("Jag skulle vilja be om en ny dator.", "En ny dator"),
        ("Ich möchte einen neuen Laptop bestellen.", "Einen neuen Laptop bestellen"),
        ("Leider funktioniert Outlook nicht.", "Leider funktioniert Outlook nicht"),
        ("How do I map a network drive?", "How do I map a network drive?"),
        ("OK button does nothing.", "OK button does nothing"),
    ],
)
def test_compress(sentence, compressed):
    assert compress(sentence) == compressed


def test_clip_cuts_at_a_word_boundary_with_an_ellipsis():
    text = "word " * 100
    clipped = clip(text)
    assert len(clipped) <= SUMMARY_MAX_CHARS
    assert clipped.endswith("word…")
    assert clip("a" * 500).endswith("…") and len(clip("a" * 500)) == SUMMARY_MAX_CHARS
    assert clip("short text") == "short text"


@pytest.mark.parametrize(
    ("title", "cleaned", "informative"),
    [
        ("RE: FW: VPN drops every hour", "VPN drops every hour", True),
        ("SV: VS: Printer virker ikke", "Printer virker ikke", True),
        ("AW: WG: [EXTERNAL] Drucker defekt", "Drucker defekt", True),
        ("Help", "Help", False),
        ("FW: Problem", "Problem", False),
        ("Urgent!!! Issue", "Urgent!!! Issue", False),
        ("INC0012345 - Teams crashes on start", "Teams crashes on start", True),
        ("", "", False),
    ],
)
def test_clean_title(title, cleaned, informative):
    assert clean_title(title) == cleaned
    assert is_informative_title(cleaned) is informative


# --- enricher --------------------------------------------------------------------------------------
def test_enricher_uses_a_good_human_title_with_high_confidence():
    ticket = Ticket(title="RE: Teams crashes when sharing screen", description=ENGLISH)
    (suggestion,) = SummaryEnricher().enrich(ticket, {})
    assert suggestion.field == "summary"
    assert suggestion.value == "Teams crashes when sharing screen"
    assert suggestion.confidence == 0.95
    assert suggestion.source == "summary"
    assert suggestion.reason.startswith("title:")


def test_enricher_summarises_the_body_when_the_title_is_empty_or_generic():
    for title in ("", "Help", "FW: Problem"):
        (suggestion,) = SummaryEnricher(name="sum").enrich(
            Ticket(title=title, description=ENGLISH), {}
        )
        assert suggestion.value == "My laptop cannot connect to the VPN since this morning"
        assert suggestion.source == "sum"
        assert suggestion.reason.startswith("extractive: sentence 2 of")
        assert 0.5 <= suggestion.confidence <= 0.85


def test_enricher_abstains_on_an_empty_ticket():
    assert SummaryEnricher().enrich(Ticket(title="Help", description="Hi,\nThanks"), {}) == []
    assert SummaryEnricher().enrich(Ticket(), {}) == []


def test_enricher_and_summarizers_satisfy_their_protocols():
    assert isinstance(SummaryEnricher(), Enricher)
    assert isinstance(ExtractiveSummarizer(), Summarizer)
    assert isinstance(
        FallbackSummarizer(ExtractiveSummarizer(), ExtractiveSummarizer()), Summarizer
    )


# --- fallback --------------------------------------------------------------------------------------
class FakeSummarizer:
    """Returns a fixed candidate, or raises the queued errors first."""

    def __init__(self, *errors: Exception, text: str | None = "From the primary") -> None:
        self.name = "fake"
        self.errors = list(errors)
        self.text = text
        self.calls = 0

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return SummaryCandidate(self.text, 0.8, "fake") if self.text else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "error",
    [
        UnavailableError("boom", system="azure-openai", status_code=503),
        RejectedError("bad", system="azure-openai", status_code=400),
    ],
)
def test_fallback_is_used_when_the_primary_fails(error, caplog):
    primary = FakeSummarizer(error)
    chain = FallbackSummarizer(primary, ExtractiveSummarizer(), clock=Clock())
    candidate = chain.summarize("", ENGLISH)
    assert candidate is not None and candidate.method == "extractive"
    assert "laptop" not in caplog.text  # no ticket text in logs
    assert type(error).__name__ in caplog.text
    assert chain.summarize("", ENGLISH) == SummaryCandidate("From the primary", 0.8, "fake")


def test_fallback_is_used_when_the_primary_abstains():
    chain = FallbackSummarizer(FakeSummarizer(text=None), ExtractiveSummarizer())
    candidate = chain.summarize("", ENGLISH)
    assert candidate is not None and candidate.method == "extractive"


def test_a_throttled_primary_is_paused_for_retry_after():
    clock = Clock()
    primary = FakeSummarizer(ThrottledError("slow down", system="azure-openai", retry_after_s=20))
    chain = FallbackSummarizer(primary, ExtractiveSummarizer(), clock=clock)
    assert chain.summarize("", ENGLISH).method == "extractive"  # type: ignore[union-attr]
    clock.now += 19
    assert chain.summarize("", ENGLISH).method == "extractive"  # type: ignore[union-attr]
    assert primary.calls == 1
    clock.now += 1
    assert chain.summarize("", ENGLISH).method == "fake"  # type: ignore[union-attr]
    assert primary.calls == 2


def test_an_auth_failure_pauses_the_primary_for_the_auth_cooldown():
    clock = Clock()
    primary = FakeSummarizer(AuthError("denied", system="azure-openai", status_code=401))
    chain = FallbackSummarizer(primary, ExtractiveSummarizer(), clock=clock, auth_cooldown_s=60)
    chain.summarize("", ENGLISH)
    clock.now += 59
    chain.summarize("", ENGLISH)
    assert primary.calls == 1
    clock.now += 1
    chain.summarize("", ENGLISH)
    assert primary.calls == 2


def test_programming_errors_in_the_primary_are_not_swallowed():
    chain = FallbackSummarizer(FakeSummarizer(ValueError("bug")), ExtractiveSummarizer())
    with pytest.raises(ValueError, match="bug"):
        chain.summarize("", ENGLISH)


def test_enricher_with_a_failing_primary_still_suggests_the_extractive_summary():
    primary = FakeSummarizer(UnavailableError("down", system="azure-openai"))
    enricher = SummaryEnricher(FallbackSummarizer(primary, ExtractiveSummarizer()))
    (suggestion,) = enricher.enrich(Ticket(description=ENGLISH), {})
    assert suggestion.value == "My laptop cannot connect to the VPN since this morning"


# --- ROUGE-L ---------------------------------------------------------------------------------------
def test_tokenize_is_unicode_aware_and_lower_cases():
    assert tokenize("Printeren på 3. sal VIRKER ikke!") == [
        "printeren",
        "på",
        "3",
        "sal",
        "virker",
        "ikke",
    ]
    assert tokenize("snake_case Größe") == ["snake", "case", "grösse"]


def test_lcs_length_hand_computed():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # the textbook example
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a", "b"], ["a", "b"]) == 2


def test_rouge_l_f1_hand_computed():
    # candidate 6 tokens, reference 6 tokens, LCS "police the gunman" = 3 → P = R = F = 0.5
    assert rouge_l_f1(
        "police kill the gunman killed nobody", "police the gunman was shot dead"
    ) == (pytest.approx(0.5))
    # LCS 2 of candidate 2 and reference 4: P = 1, R = 0.5, F = 2/3
    assert rouge_l_f1("VPN down", "the VPN is down") == pytest.approx(2 / 3)
    assert rouge_l_f1("same words", "Same, words!") == 1.0
    assert rouge_l_f1("", "anything") == 0.0
    assert rouge_l_f1("nothing shared", "at all") == 0.0
