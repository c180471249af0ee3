"""LlmClassifier: the request it builds, how it reads answers, and when it abstains (no I/O)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pytest

from domain.errors import ThrottledError
from domain.mapping import FieldMapping, parse_mapping
from domain.models import Suggestion, Ticket
from enrichers.llm_classifier import LlmClassifier, logprob_confidence, parse_answer

MAPPING_YAML = """
version: 1
fields: {title: short_description, description: description, category: category,
         subcategory: subcategory, impact: impact, urgency: urgency}
values:
  category: {network: network, hardware: hardware, software: software}
  subcategory: {vpn: vpn, wifi: wifi, laptop: laptop}
  impact: {high: "1", medium: "2", low: "3"}
  urgency: {high: "1", medium: "2", low: "3"}
subcategory_parent: {vpn: network, wifi: network, laptop: hardware}
names:
  category: {network: Network and connectivity}
descriptions:
  category:
    network: "VPN, Wi-Fi, LAN, DNS and firewall problems <b>only</b>"
    hardware: Laptops, docks, printers and other physical devices
    software: Installed applications and their licences
"""


def mapping() -> FieldMapping:
    return parse_mapping(MAPPING_YAML, name="test.yaml")


def tokens_for(content: str, logprobs: Mapping[str, float]) -> list[dict[str, Any]]:
    """Split a JSON answer like a tokenizer might: punctuation runs and words.

    A word token listed in ``logprobs`` gets that logprob; punctuation gets ``logprobs[","]``
    after a value (the closing quote), else 0.
    """
    out = []
    for piece in re.findall(r'[{}":,]+|[^{}":,]+', content):
        logprob = logprobs.get(piece, logprobs.get(piece[:1], 0.0) if piece[:1] in '",}' else 0.0)
        out.append({"token": piece, "logprob": logprob, "bytes": list(piece.encode())})
    return out


def completion(
    answer: Mapping[str, str] | str,
    logprobs: Mapping[str, float] | None = None,
    *,
    finish_reason: str = "stop",
    top: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A chat completions answer; ``logprobs`` None leaves the log-probabilities out."""
    content = answer if isinstance(answer, str) else json.dumps(answer, separators=(",", ":"))
    choice: dict[str, Any] = {
        "index": 0,
        "finish_reason": finish_reason,
        "message": {"role": "assistant", "content": content},
    }
    if logprobs is not None:
        toks = tokens_for(content, logprobs)
        if top is not None:
            for tok in toks:
                if tok["token"] in logprobs and tok["token"] not in '",}':
                    tok["top_logprobs"] = [{"token": tok["token"], "logprob": tok["logprob"]}, *top]
                    break
        choice["logprobs"] = {"content": toks}
    return {"choices": [choice]}


class FakeEndpoint:
    """Records every request and answers with the next prepared answer."""

    def __init__(self, *answers: Mapping[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[Mapping[str, Any]] = []

    def __call__(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


TICKET = Ticket(title="VPN drops every hour", description="Hi team,\n\nThe VPN disconnects.\n")


def test_request_constrains_every_field_to_the_mapped_labels() -> None:
    clf = LlmClassifier(mapping(), FakeEndpoint(), fields=["category", "subcategory", "impact"])
    request = clf.build_request(TICKET)
    assert request is not None
    fmt = request["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"] == {
        "category": {"type": "string", "enum": ["network", "hardware", "software"]},
        "subcategory": {"type": "string", "enum": ["vpn", "wifi", "laptop"]},
        "impact": {"type": "string", "enum": ["high", "medium", "low"]},
    }
    assert schema["required"] == ["category", "subcategory", "impact"]
    assert schema["additionalProperties"] is False
    assert request["logprobs"] is True and request["top_logprobs"] == 5
    assert request["temperature"] == 0
    system = request["messages"][0]["content"]
    # Names and descriptions from the mapping, sanitised (no markup from the admin's text).
    assert "- network: Network and connectivity. VPN, Wi-Fi, LAN, DNS and firewall" in system
    assert "<b>" not in system
    assert "- hardware: Laptops, docks, printers" in system


def test_ticket_text_is_sanitised_cleaned_and_bounded() -> None:
    body = (
        "Hello,\n\n<script>alert(1)</script> The printer \u202ejams\u0007 [code]<img>[/code] "
        + "paper " * 3000
        + "\n\nBest regards\nJane Doe\n+45 12 34 56 78"
    )
    clf = LlmClassifier(mapping(), FakeEndpoint(), max_input_chars=500)
    request = clf.build_request(Ticket(title="Printer <b>jams</b>", description=body))
    assert request is not None
    user = request["messages"][1]["content"]
    assert len(user) <= 500
    assert user.startswith("Title: Printer jams\nDescription: ")
    for bad in ("<script", "<img", "[code]", "\u202e", "\u0007", "<b>"):
        assert bad not in user
    assert "The printer" in user and user.endswith("…")


def test_fields_already_known_are_not_asked_and_nothing_known_means_no_request() -> None:
    endpoint = FakeEndpoint()
    clf = LlmClassifier(mapping(), endpoint, fields=["category", "impact"])
    person = Ticket(title="x", description="y", current={"category": "network"})
    chosen = {"impact": Suggestion(field="impact", value="high", confidence=0.9, reason="rule")}
    assert clf.build_request(person, chosen) is None
    assert clf.enrich(person, chosen) == []
    assert endpoint.requests == []  # no request at all
    request = clf.build_request(person)
    assert request is not None
    assert list(request["response_format"]["json_schema"]["schema"]["properties"]) == ["impact"]


def test_a_known_category_narrows_the_subcategory_labels() -> None:
    clf = LlmClassifier(mapping(), FakeEndpoint(), fields=["category", "subcategory"])
    ticket = Ticket(title="x", description="y", current={"category": "network"})
    request = clf.build_request(ticket)
    assert request is not None
    props = request["response_format"]["json_schema"]["schema"]["properties"]
    assert props == {"subcategory": {"type": "string", "enum": ["vpn", "wifi"]}}
    assert 'The category is already "network"' in request["messages"][0]["content"]


def test_confidence_is_the_probability_of_the_value_tokens() -> None:
    answer = completion(
        {"category": "network", "impact": "low"},
        {"network": math.log(0.8), '","': math.log(0.9), "low": math.log(0.5)},
        top=[{"token": "hard", "logprob": math.log(0.15)}],
    )
    clf = LlmClassifier(mapping(), FakeEndpoint(answer), fields=["category", "impact"])
    got = {s.field: s for s in clf.enrich(TICKET, {})}
    # category: "network" (0.8) times its closing quote token '","' (0.9).
    assert got["category"].value == "network"
    assert got["category"].confidence == pytest.approx(0.72)
    assert got["category"].source == "llm"
    assert "next hardware p=0.15" in got["category"].reason
    # impact: "low" (0.5); its closing '"}' token has logprob 0.
    assert got["impact"].confidence == pytest.approx(0.5)


def test_bytes_are_used_when_token_strings_do_not_spell_the_answer() -> None:
    content = '{"category":"network"}'
    toks = tokens_for(content, {"network": math.log(0.6)})
    for tok in toks:
        tok["token"] = "\ufffd"  # what a partial UTF-8 token's string can look like
    found = logprob_confidence(content, toks, "category")
    assert found is not None and found[0] == pytest.approx(0.6)
    toks[0]["bytes"] = [0]  # neither spells the answer: unknowable
    assert logprob_confidence(content, toks, "category") is None


def test_an_answer_outside_the_labels_abstains() -> None:
    answer = completion({"category": "printers", "impact": "high"}, {"printers": -0.01})
    clf = LlmClassifier(mapping(), FakeEndpoint(answer), fields=["category", "impact"])
    suggestions = clf.enrich(TICKET, {})
    assert [s.field for s in suggestions] == ["impact"]
    assert "outside the category labels" in clf.explain(TICKET, {})["category"]


def test_no_logprobs_abstains_unless_a_fixed_confidence_is_configured() -> None:
    answer = completion({"category": "network"})
    clf = LlmClassifier(mapping(), FakeEndpoint(answer), fields=["category"])
    assert clf.enrich(TICKET, {}) == []
    assert "without token log-probabilities" in clf.explain(TICKET, {})["category"]
    fixed = LlmClassifier(
        mapping(), FakeEndpoint(answer), fields=["category"], confidence_without_logprobs=0.6
    )
    [suggestion] = fixed.enrich(TICKET, {})
    assert (suggestion.value, suggestion.confidence) == ("network", 0.6)


def test_a_subcategory_under_another_category_abstains() -> None:
    answer = completion({"category": "network", "subcategory": "laptop"}, {"network": -0.1})
    clf = LlmClassifier(mapping(), FakeEndpoint(answer), fields=["category", "subcategory"])
    assert [s.field for s in clf.enrich(TICKET, {})] == ["category"]
    assert "not under category network" in clf.explain(TICKET, {})["subcategory"]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (completion("", finish_reason="content_filter"), "content filter"),
        (completion('{"category": "netw', {}, finish_reason="length"), "cut off"),
        (completion("not json", {}), "not JSON"),
        ({"choices": []}, "no choice"),
        ({"choices": [{"message": {"refusal": "no", "content": None}}]}, "no answer"),
    ],
)
def test_unusable_answers_abstain_on_every_field(response: dict[str, Any], reason: str) -> None:
    answers = parse_answer(response, {"category": ["network"], "impact": ["high"]})
    assert {f: a.label for f, a in answers.items()} == {"category": None, "impact": None}
    assert all(reason in a.reason for a in answers.values())


def test_enrich_then_explain_sends_one_request_and_errors_propagate() -> None:
    endpoint = FakeEndpoint(
        completion({"category": "software"}, {"software": -0.2}),
        ThrottledError("slow down", system="llm", retry_after_s=42.0),
    )
    clf = LlmClassifier(mapping(), endpoint, fields=["category"])
    assert clf.enrich(TICKET, {})[0].value == "software"
    assert clf.explain(TICKET, {}) == {}
    assert len(endpoint.requests) == 1
    other = Ticket(title="Laptop screen broken", description="")
    with pytest.raises(ThrottledError) as caught:
        clf.enrich(other, {})
    assert caught.value.retry_after_s == 42.0


def test_fields_without_labels_or_switched_off_are_never_asked() -> None:
    off = mapping().model_copy(update={"modes": {"impact": "off"}})
    clf = LlmClassifier(off, FakeEndpoint(), fields=["category", "impact", "assignment_group"])
    assert clf.fields == ("category",)
