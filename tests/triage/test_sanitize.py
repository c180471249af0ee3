"""The write-boundary sanitiser: the reproduced injections, then properties over any text."""

from __future__ import annotations

import html
import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.errors import ConfigError
from domain.mapping import load_mapping
from domain.models import Decision, Ticket
from domain.sanitize import (
    NOTE_MAX_CHARS,
    sanitize_note,
    sanitize_value,
    sanitize_write,
)
from enrichers.summary import SummaryEnricher
from tests.fakes import suggestion
from triage.policy import decide, render_note, to_changes, write_limits

M = load_mapping()
NOTE = M.note_field
PAYLOAD = "[code]&lt;img src=x onerror=alert(1)&gt;[/code]"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
CONTROLS = "\x00\x07\x1b\x7f\x85\x9b"
# Anything that could open a tag, comment or processing instruction in an HTML tokenizer.
TAG_OPENER = re.compile(r"<[^\s\d=]|<$")
ATTR_IN_TAG = re.compile(r"<[a-z/!?][^<>]*onerror\s*=", re.IGNORECASE)


def ticket(title: str = "", description: str = "") -> Ticket:
    base = dict.fromkeys(("category", "subcategory", "impact", "urgency", "summary"))
    return Ticket(record_id="r", title=title, description=description, current=base)


def written(t: Ticket) -> dict[str, str]:
    """What the pipeline sends: real summary enricher → policy → note → sanitize_write."""
    chosen = {s.field: s for s in SummaryEnricher().enrich(t, {})}
    decisions = decide(t, chosen, M)
    changes = to_changes(decisions, M)
    note = render_note(decisions, M) + "\ninput 0123456789abcdef"
    return sanitize_write({**changes, NOTE: note}, note_field=NOTE)


def assert_safe(text: str, *, note: bool = False) -> None:
    assert not TAG_OPENER.search(text), text
    assert "[code" not in text.lower()
    assert not ATTR_IN_TAG.search(text)
    assert not set(text) & set(BIDI + CONTROLS)
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs") or c == "\n" for c in text)
    if not note:
        assert "\n" not in text


# --- the reproductions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "description",
    [
        PAYLOAD,
        f"Hi, the VPN client fails to connect {PAYLOAD} since this morning.",
        f"{PAYLOAD} VPN client fails to connect since this morning",
        "VPN client fails &amp;lt;img src=x onerror=alert(1)&amp;gt; since this morning",
    ],
)
def test_encoded_markup_in_a_description_never_reaches_the_ticket(description):
    out = written(ticket(title="help", description=description))
    assert out, "a note is always written when a summary was chosen"
    for field, value in out.items():
        assert_safe(value, note=field == NOTE)
    assert "onerror=" not in out.get("short_description", "")


def test_the_summary_keeps_the_text_around_removed_markup():
    out = written(ticket(title="help", description=f"The VPN client fails {PAYLOAD} today."))
    assert out["short_description"] == "The VPN client fails today"
    assert "- summary = The VPN client fails today (confidence" in out[NOTE]


def test_a_title_with_markup_bidi_and_controls_is_not_copied_into_the_note():
    title = f"VPN down {PAYLOAD}<script>x</script>\u202eevil\x00\x1b[31m" + BIDI
    out = written(ticket(title=title, description="x"))
    assert out["short_description"] == "VPN down x evil[31m"
    assert "- summary = VPN down x evil[31m (confidence 95%)" in out[NOTE]
    for field, value in out.items():
        assert_safe(value, note=field == NOTE)


def test_a_title_that_is_only_markup_falls_back_to_the_description():
    t = ticket(title="<img src=x onerror=alert(1)>", description="Printer jams daily.")
    (summary,) = SummaryEnricher().enrich(t, {})
    assert summary.value == "Printer jams daily"
    assert summary.reason.startswith("extractive")


def test_a_summary_never_imitates_our_note():
    for value in (
        "[auto-triage] Filled automatically; please correct anything wrong. VPN down",
        "[auto-triage][x] VPN down",
        "Filled automatically: VPN down",
        "[External] [Ticket] VPN down",
    ):
        assert sanitize_value(value, max_chars=160) == "VPN down"
    assert sanitize_value("[auto-triage]", max_chars=160) == ""
    # The note's own prefix is kept.
    assert sanitize_note("[auto-triage] Filled automatically").startswith("[auto-triage] Filled")


def test_short_description_loses_bidi_and_control_chars():
    out = sanitize_write(
        {"short_description": f"Pay{BIDI}roll\u200b{CONTROLS} export\tfails\r\nagain"},
        note_field=NOTE,
    )
    assert out == {"short_description": "Payroll export fails again"}


def test_note_keeps_line_breaks_but_not_carriage_returns_or_controls():
    note = "[auto-triage] a\r\n- x = 1\x00\x07\r- y = 2\u2028z\n\n\n\nend"
    assert sanitize_note(note) == "[auto-triage] a\n- x = 1\n- y = 2 z\n\nend"


def test_lengths_are_capped_per_field_at_a_word_boundary():
    out = sanitize_write(
        {
            "short_description": "word " * 100,
            "category": "x" * 100,
            "description": "y" * 5000,
            NOTE: "line\n" * 2000,
        },
        note_field=NOTE,
    )
    assert out["short_description"] == ("word " * 31).strip() + "…"
    assert len(out["short_description"]) <= 160
    assert len(out["category"]) == 40
    assert len(out["description"]) == 1000
    assert len(out[NOTE]) <= NOTE_MAX_CHARS
    assert out[NOTE].endswith("line…")
    capped = sanitize_write({"category": "x" * 100}, note_field=NOTE, limits={"category": 10})
    assert capped == {"category": "x" * 9 + "…"}


def test_values_with_nothing_left_are_dropped_not_written_empty(caplog):
    out = sanitize_write(
        {"short_description": PAYLOAD, "category": "network", NOTE: "\x00"}, note_field=NOTE
    )
    assert out == {"category": "network"}
    assert "short_description" in caplog.text
    assert "onerror" not in caplog.text


def test_a_limit_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 1"):
        sanitize_write({"category": "x"}, note_field=NOTE, limits={"category": 0})


def test_harmless_comparisons_and_ampersands_survive():
    text = "Latency > 500 ms, loss < 5 %, a <= b at AT&T R&D"
    assert sanitize_value(text, max_chars=160) == text


def test_markup_hidden_by_invisible_chars_or_nested_encodings_is_removed():
    assert sanitize_value("&l\u200bt;img src=x&gt; ok", max_chars=99) == "ok"
    assert sanitize_value("[co\u200dde]x[/co\u2060de]", max_chars=99) == "x"
    assert sanitize_value("<scr<script>ipt>x", max_chars=99) == "scr ipt>x"
    deep = "&" + "amp;" * 20 + "lt;img src=x&gt;"
    assert_safe(sanitize_value(deep, max_chars=200))


def test_render_note_quotes_one_line_per_item_whatever_a_reason_holds():
    evil = "keyword 'vpn'\n- category = hardware (confidence 100%): forged\r\n[code]<b>x</b>"
    decisions = [
        Decision(field="category", action="write", value="network", confidence=0.9,
                 reason=evil, why="ok"),
        Decision(field="impact", action="skip", value="high\n- urgency = high", confidence=0.5,
                 reason="r", why="below\nthreshold " + "w" * 500),
    ]  # fmt: skip
    lines = render_note(decisions, M).split("\n")
    assert len(lines) == 4
    assert lines[1].startswith("- category = network (confidence 90%): keyword 'vpn' - category")
    assert lines[2] == "Not filled:"
    assert lines[3].startswith("- impact: high - urgency = high (below threshold ww")
    assert len(lines[3]) < 2 * 200 + 20
    for line in lines:
        assert_safe(line)


def test_policy_refuses_a_value_with_nothing_left_once_sanitised():
    chosen = {"summary": suggestion("summary", "<img src=x onerror=alert(1)>", 0.99)}
    (d,) = decide(ticket(), chosen, M)
    assert d.action == "skip"
    assert "nothing left" in d.why
    assert to_changes([d], M) == {}


def test_write_limits_follow_the_mapping():
    limits = write_limits(M)
    assert limits["short_description"] == 160
    assert limits["category"] == limits["impact"] == 40
    assert "description" not in limits


# --- properties ------------------------------------------------------------------------------

FRAGMENTS = [
    "<", ">", "&", ";", "#", "/", "!", "?", "=", "[", "]", " ", "\n", "\r\n", "\t", "-",
    "&lt;", "&gt;", "&LT", "&lt", "&#60;", "&#x3c;", "&#X3C", "&amp;", "&amp;lt;", "&#38;",
    "&#x5b;", "&lsqb;", "&Kappa", "\u037e", "\u212a", "\u0338", "e\u0301", "\u226e",
    "[code]", "[/code]", "[ CoDe ]", "[ / code ]", "[code lang=x]", "code", "CODE",
    "img", "a", "b", "script", "svg/onload=alert(1)", " onerror=alert(1)", "<!--", "-->",
    "<![CDATA[", "]]>", "<?xml", "<img", "</", "[auto-triage]", "Filled automatically; ",
    "\u202e", "\u2066", "\u200b", "\u200d", "\u00ad", "\ufeff", "\x00", "\x07", "\x1b", "\x85",
    "\u2028", "\u00a0", "\ud800", "1", "5", "AT&T",
]  # fmt: skip
nasty = st.recursive(
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join),
    lambda inner: st.one_of(
        inner.map(html.escape),  # one more layer of entity encoding
        inner.map(lambda s: f"[code]{s}[/code]"),
        inner.map(lambda s: f"<b title='{s}'>{s}</b>"),
        st.tuples(inner, inner).map("".join),
        st.tuples(inner, st.sampled_from(FRAGMENTS), inner).map("".join),
    ),
    max_leaves=8,
)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
texts = st.one_of(any_text, nasty, st.tuples(any_text, nasty, any_text).map("".join))
limits = st.integers(min_value=1, max_value=400)


def check_output(out: str, limit: int, *, note: bool) -> None:
    assert len(out) <= limit
    assert_safe(out, note=note)
    assert html.unescape(out) == out  # a renderer decoding once more finds no markup either
    if note:
        assert "\r" not in out
    else:
        assert out == " ".join(out.split())


@given(texts, limits)
def test_any_value_comes_out_safe_bounded_and_single_line(text, limit):
    out = sanitize_value(text, max_chars=limit)
    check_output(out, limit, note=False)
    assert unicodedata.is_normalized("NFC", out)
    assert sanitize_value(out, max_chars=limit) == out


@given(texts, st.integers(min_value=1, max_value=NOTE_MAX_CHARS))
@example("[&lt\nCODE", NOTE_MAX_CHARS)  # found by the deep profile: "<" then a line break
def test_any_note_comes_out_safe_bounded_and_idempotent(text, limit):
    out = sanitize_note(text, max_chars=limit)
    check_output(out, limit, note=True)
    assert sanitize_note(out, max_chars=limit) == out


@given(st.dictionaries(st.sampled_from(["short_description", "category", "u_x", NOTE]), texts))
def test_sanitize_write_drops_only_empties_and_respects_limits(changes):
    out = sanitize_write(changes, note_field=NOTE)
    assert set(out) <= set(changes)
    for field, value in out.items():
        limit = {"short_description": 160, "category": 40, NOTE: 4000}.get(field, 1000)
        check_output(value, limit, note=field == NOTE)
        assert value
    for field in set(changes) - set(out):
        fix = sanitize_note if field == NOTE else sanitize_value
        assert fix(changes[field], max_chars=4000) == ""
    assert sanitize_write(out, note_field=NOTE) == out


@given(texts, texts)
def test_render_note_is_safe_before_the_write_boundary(title, description):
    t = ticket(title=title, description=description)
    chosen = {s.field: s for s in SummaryEnricher().enrich(t, {})}
    decisions = decide(t, chosen, M)
    note = render_note(decisions, M)
    lines = note.split("\n")
    assert len(lines) == 1 + len(decisions) + any(d.action == "skip" for d in decisions)
    for line in lines[1:]:
        assert_safe(line)
    assert sanitize_note(note) == note
