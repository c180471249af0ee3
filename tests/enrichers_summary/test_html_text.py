"""HTML e-mail bodies: text conversion, Outlook/Gmail reply chains, and the cleaning on top."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enrichers.html_text import html_to_text, looks_like_html, split_html_reply
from enrichers.summary import ExtractiveSummarizer
from enrichers.text import clean_email_text, parse_email

OUTLOOK_HEAD = (
    '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
    '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    "<style><!-- p.MsoNormal {margin:0cm; font-family:Calibri} --></style>"
    '<!--[if gte mso 9]><xml><o:shapedefaults v:ext="edit" spidmax="1026" /></xml><![endif]-->'
    '</head><body lang="DA"><div class="WordSection1">'
)

# Outlook desktop, Danish, replying to an older thread (the chain is Outlook on the web's).
OUTLOOK_DA = (
    OUTLOOK_HEAD + '<p class="MsoNormal">Hej Servicedesk,<o:p></o:p></p>'
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
    '<p class="MsoNormal">Min printer p&aring; 3. sal virker ikke l&aelig;ngere. '
    "Den viser fejl 49 og sluger papiret, s&aring; ingen p&aring; etagen kan printe.<o:p></o:p></p>"
    '<p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
    '<p class="MsoNormal">Med venlig hilsen<o:p></o:p></p>'
    '<p class="MsoNormal"><b>Mette Hansen</b> | Regnskab<o:p></o:p></p>'
    '<p class="MsoNormal">Tlf. <a href="tel:+4512345678">12 34 56 78</a><o:p></o:p></p>'
    '<div style="display:none;mso-hide:all">Preheader text nobody sees</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">'
    "<b>Fra:</b> Jens Jensen &lt;jens@example.dk&gt;<br><b>Sendt:</b> 3. juni 2024 10:00<br>"
    "<b>Til:</b> Servicedesk<br><b>Emne:</b> Printer p&aring; 3. sal</font><div>&nbsp;</div>"
    "</div><div><p>Gammel tekst om en helt anden sk&aelig;rm, der flimrer.</p></div>"
    "</div></body></html>"
)

# Outlook desktop, English: the chain is a bordered div with a From/Sent block, no div id.
OUTLOOK_EN = (
    OUTLOOK_HEAD + '<p class="MsoNormal">Hi team,</p><p class="MsoNormal">&nbsp;</p>'
    '<p class="MsoNormal">Since this morning the VPN client disconnects every 30 minutes with '
    'error 809, see the <a href="https://intranet.example.com/vpn">VPN guide</a>.</p>'
    '<p class="MsoNormal">&nbsp;</p><p class="MsoNormal">Best regards</p>'
    '<p class="MsoNormal">John Smith</p>'
    '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
    '<p class="MsoNormal"><b>From:</b> IT Helpdesk &lt;help@example.com&gt;<br>'
    "<b>Sent:</b> Monday, 3 June 2024 10:00<br><b>To:</b> John Smith<br>"
    "<b>Subject:</b> RE: VPN drops</p></div>"
    '<p class="MsoNormal">Please restart your laptop and try again.</p>'
    "</div></body></html>"
)

# Gmail, English reply: the quote is in gmail_quote.
GMAIL_EN = (
    '<div dir="ltr"><div>Hello,</div><div><br></div><div>The scanner in room 4.12 fails with '
    "&quot;network error&quot; when I scan to e-mail, since the update yesterday.</div>"
    "<div><br></div><div>Thanks</div><div>Anna</div></div><br>"
    '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    "On Mon, 3 Jun 2024 at 10:00, Helpdesk &lt;help@example.com&gt; wrote:<br></div>"
    '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
    "Has the printer been fixed?</blockquote></div>"
)

# Gmail, Danish, a bare forward: the sender wrote nothing, so the forwarded message is the case.
GMAIL_DA_FORWARD = (
    '<div dir="ltr"><div><br></div><br><div class="gmail_quote">'
    '<div dir="ltr" class="gmail_attr">---------- Videresendt meddelelse ---------<br>'
    "Fra: <b>Peter</b> &lt;peter@example.dk&gt;<br>Date: man. 3. jun. 2024 kl. 10.00<br>"
    "Subject: Adgangskort virker ikke<br>To: &lt;it@example.dk&gt;<br></div><br><br>"
    '<div dir="ltr">Mit adgangskort virker ikke ved hovedindgangen siden i morges.</div>'
    "</div></div>"
)


def test_outlook_danish_body_is_text_without_head_style_or_hidden_parts():
    text = html_to_text(OUTLOOK_DA)
    assert text.startswith("Hej Servicedesk,\n\nMin printer på 3. sal virker ikke længere.")
    for noise in ("MsoNormal", "font-family", "shapedefaults", "Preheader", "tel:", "&aring;"):
        assert noise not in text
    # An escaped address is text, spaced so that it can never read as a tag.
    assert "Jens Jensen < jens@example.dk>" in text
    assert "12 34 56 78" in text  # link text stays, its URL goes


def test_outlook_danish_reply_chain_is_cut_and_its_subject_kept():
    own, chain = split_html_reply(OUTLOOK_DA)
    assert "Gammel tekst" not in own and "Fra:" not in own
    assert chain.startswith("Fra: Jens Jensen < jens@example.dk>\nSendt:")
    email = parse_email(OUTLOOK_DA)
    assert email.body == (
        "Min printer på 3. sal virker ikke længere. Den viser fejl 49 og sluger papiret, "
        "så ingen på etagen kan printe."
    )
    assert email.subjects == ("Printer på 3. sal",)


def test_outlook_english_chain_without_div_id_is_cut_at_the_from_sent_block():
    own, chain = split_html_reply(OUTLOOK_EN)
    assert own.endswith("John Smith") and chain.startswith("From: IT Helpdesk")
    assert clean_email_text(OUTLOOK_EN) == (
        "Since this morning the VPN client disconnects every 30 minutes with error 809, "
        "see the VPN guide."
    )
    assert parse_email(OUTLOOK_EN).subjects == ("RE: VPN drops",)


def test_gmail_quote_is_cut():
    assert clean_email_text(GMAIL_EN) == (
        'The scanner in room 4.12 fails with "network error" when I scan to e-mail, '
        "since the update yesterday."
    )


def test_a_bare_forward_keeps_the_forwarded_message():
    email = parse_email(GMAIL_DA_FORWARD)
    assert email.body == "Mit adgangskort virker ikke ved hovedindgangen siden i morges."
    assert email.subjects == ("Adgangskort virker ikke",)


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a</p><p>b</p>", "a\nb"),
        ("<div>a</div><div><br></div><div>b</div>", "a\n\nb"),
        ("a<br>b<br/>c", "a\nb\nc"),
        ("<ul><li>one</li><li>two</li></ul>", "one\ntwo"),
        (
            "<table><tr><td>Name</td><td>Anna</td></tr><tr><td>Room</td></tr></table>",
            "Name Anna\nRoom",
        ),
        ("<p>keep</p><!-- a comment <p>gone</p> --><script>alert(1)</script>", "keep"),
        ("<p hidden>gone</p><span style='visibility: hidden'>gone</span>ok", "ok"),
        ("<pre>line 1\n  line 2</pre>", "line 1\nline 2"),
        ("&amp;lt;b&amp;gt; once", "&lt;b&gt; once"),
        ("&lt;script&gt;x&lt;/script&gt;", "< script>x< /script>"),
        ("<a href='https://x.example/very/long'>the guide</a>", "the guide"),
        ("<img src='cid:image001.png' alt='logo'>text", "text"),
        ("<head><title>t</title><body>body text", "body text"),
        ("<div><span>unclosed <b>bold", "unclosed bold"),
        ("</p></div>stray end tags", "stray end tags"),
        ("a&nbsp;&nbsp;b\u200bc", "a b c"),
    ],
)
def test_html_to_text(html, text):
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("text", "is_html"),
    [
        ("<html><body><p>x</p></body></html>", True),
        ("<!DOCTYPE html>\n<p>x</p>", True),
        ('<div dir="ltr">one<br>two</div>', True),
        ("<p>one</p>\n<p>two</p>", True),
        ("Line one<br>Line two", True),
        ("The <b>printer</b> fails\nsince Monday", False),
        ("First line\n<br>\nsecond line with text\nand more", False),
        ("if a < b and c > d", False),
        ("plain text", False),
    ],
)
def test_looks_like_html(text, is_html):
    assert looks_like_html(text) is is_html


@pytest.mark.parametrize(
    ("html", "separator"),
    [
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<p>-----Original Message-----</p><p>From: a</p><p>old</p>", "-----Original Message-----"),
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<p>Von: Hans<br>Gesendet: Montag<br>Betreff: x</p><p>old</p>", "Von: Hans"),
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<p>Från: Anna<br>Skickat: den 3 juni<br>Ämne: x</p><p>old</p>", "Från: Anna"),
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<p>Fra: Ola Nordmann<br>Sendt: 3. juni<br>Emne: x</p><p>old</p>", "Fra: Ola"),
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<p><b>From:</b> Jane <b>Sent:</b> Monday</p><p>old</p>", "From: Jane Sent:"),
        ("<p>Still broken after the fix, the screen stays black on boot.</p>"
         "<blockquote type='cite'>old</blockquote>", "old"),
    ],
)  # fmt: skip
def test_text_and_html_reply_separators_start_the_chain(html, separator):
    own, chain = split_html_reply(html)
    assert own == "Still broken after the fix, the screen stays black on boot."
    assert chain.startswith(separator) and "old" in chain
    assert "old" not in parse_email(html).body


def test_a_short_reply_keeps_the_chain_it_answers():
    html = (
        "<p>Still broken, any update?</p><div id='divRplyFwdMsg'><b>From:</b> Jane<br>"
        "<b>Sent:</b> Monday<br><b>Subject:</b> Scanner</div><p>The scanner fails.</p>"
    )
    body = parse_email(html).body
    assert "Still broken" in body and "The scanner fails." in body


def test_a_from_line_without_sent_is_not_a_chain():
    html = "<p>Please book the room.</p><p>From: Monday</p><p>To: Friday</p>"
    assert split_html_reply(html) == ("Please book the room.\nFrom: Monday\nTo: Friday", "")


def test_plain_text_descriptions_keep_the_plain_path():
    text = "Hi,\nThe <b>scanner</b> fails.\nThanks\nJane"
    assert not looks_like_html(text)
    assert clean_email_text(text) == "The scanner fails."


# --- the summary of an HTML e-mail is the summary of its plain-text version ---------------------
PAIRS = [
    (
        OUTLOOK_DA,
        "Hej Servicedesk,\n\nMin printer på 3. sal virker ikke længere. Den viser fejl 49 og "
        "sluger papiret, så ingen på etagen kan printe.\n\nMed venlig hilsen\nMette Hansen | "
        "Regnskab\nTlf. 12 34 56 78\n",
    ),
    (
        OUTLOOK_EN,
        "Hi team,\n\nSince this morning the VPN client disconnects every 30 minutes with error "
        "809, see the VPN guide.\n\nBest regards\nJohn Smith\n",
    ),
    (
        GMAIL_EN,
        'Hello,\n\nThe scanner in room 4.12 fails with "network error" when I scan to e-mail, '
        "since the update yesterday.\n\nThanks\nAnna\n",
    ),
    (
        "<html><body><p>Kære IT,</p><p>Kan I oprette en ny bruger til vores praktikant, der "
        "starter mandag? Hun skal have adgang til Navision og det fælles drev.</p>"
        "<p>Mvh</p><p>Lars</p></body></html>",
        "Kære IT,\n\nKan I oprette en ny bruger til vores praktikant, der starter mandag? Hun "
        "skal have adgang til Navision og det fælles drev.\n\nMvh\nLars",
    ),
]


@pytest.mark.parametrize(("html", "plain"), PAIRS)
def test_the_summary_of_html_equals_the_summary_of_plain_text(html, plain):
    summarizer = ExtractiveSummarizer()
    from_html = summarizer.summarize("", html)
    from_plain = summarizer.summarize("", plain)
    assert from_html is not None and from_plain is not None
    assert from_html.text == from_plain.text
    assert clean_email_text(html) == clean_email_text(plain)


# --- properties ---------------------------------------------------------------------------------
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_pieces = st.one_of(
    st.text(max_size=15),
    st.sampled_from(
        ["<p>", "</p>", "<div>", "</div>", "<br>", "<br/>", "<b>", "</b>", "<blockquote>",
         "</blockquote>", "<div id=divRplyFwdMsg>", "<div class='gmail_quote'>", "<hr>",
         "<style>", "</style>", "<script>", "<!--", "-->", "<![if !x]>", "<![endif]>",
         "<head>", "<body>", "<pre>", "</pre>", "<p hidden>", "<span style='display:none'>",
         "&lt;", "&gt;", "&amp;", "&nbsp;", "&#0;", "&#x110000;", "&#55296;", "&bogus;", "<", ">",
         "<a href='http://x'>", "</a>", "<!DOCTYPE html>", "<?xml?>", "<!x", "<![CDATA[", "]]>",
         "From: a\n", "Sent: b\n", "-----Original Message-----", "\r\n", "\x00", "<td>", "<tr>"]
    ),
)  # fmt: skip
html_ish = st.lists(_pieces, max_size=30).map("".join)


@given(html_ish)
def test_any_html_ish_input_gives_text_without_tags(html):
    text = html_to_text(html)
    own, chain = split_html_reply(html)
    cleaned = [clean_email_text(html)] if looks_like_html(html) else []
    for out in (text, own, chain, *cleaned):
        assert _TAG.search(out) is None
        assert "\r" not in out and "\n\n\n" not in out and out == out.strip()


def _as_html(text: str) -> str:
    """Text written back as HTML: escaped, one <br> per line break."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\n", "<br>")


@given(html_ish)
def test_text_written_back_as_html_converts_to_itself(html):
    text = html_to_text(html)
    assert html_to_text(_as_html(text)) == text
