"""PriorityEnricher: impact × urgency through the mapping's matrix, from suggestions or people."""

from __future__ import annotations

from typing import Any

import pytest

from domain.mapping import FieldMapping
from domain.models import Suggestion, Ticket
from enrichers.base import Enricher
from enrichers.engine import run_enrichers
from enrichers.keywords import KeywordEnricher
from enrichers.priority import PriorityEnricher

FIELDS = {"title": "short_description", "description": "description", "impact": "impact"}


def make_mapping(**extra: Any) -> FieldMapping:
    return FieldMapping.model_validate({"fields": FIELDS, **extra})


DEFAULT = make_mapping()


def suggest(field: str, value: str, confidence: float) -> Suggestion:
    return Suggestion(field=field, value=value, confidence=confidence, reason="test", source="test")


def run(
    chosen: dict[str, Suggestion],
    current: dict[str, str | None] | None = None,
    mapping: FieldMapping = DEFAULT,
) -> list[Suggestion]:
    return PriorityEnricher(mapping).enrich(Ticket(current=current or {}), chosen)


def test_is_an_enricher_named_priority() -> None:
    enricher = PriorityEnricher(DEFAULT)
    assert isinstance(enricher, Enricher)
    assert enricher.name == "priority"


# ServiceNow's out-of-box lookup, written out here rather than read from the code under test.
@pytest.mark.parametrize(
    ("impact", "urgency", "priority"),
    [
        ("high", "high", "critical"),
        ("high", "medium", "high"),
        ("high", "low", "moderate"),
        ("medium", "high", "high"),
        ("medium", "medium", "moderate"),
        ("medium", "low", "low"),
        ("low", "high", "moderate"),
        ("low", "medium", "low"),
        ("low", "low", "planning"),
    ],
)
def test_default_matrix(impact: str, urgency: str, priority: str) -> None:
    chosen = {"impact": suggest("impact", impact, 0.9), "urgency": suggest("urgency", urgency, 0.8)}
    [result] = run(chosen)
    assert (result.field, result.value, result.source) == ("priority", priority, "priority")
    assert result.confidence == pytest.approx(0.8)
    assert result.reason == f"impact {impact} (0.90) × urgency {urgency} (0.80) → {priority}"


@pytest.mark.parametrize(
    ("chosen", "current", "confidence", "reason"),
    [
        (
            {"impact": ("high", 0.92)},
            {"urgency": "medium"},
            0.92,
            "impact high (0.92) × urgency medium (person) → high",
        ),
        (
            {"urgency": ("low", 0.81)},
            {"impact": "low"},
            0.81,
            "impact low (person) × urgency low (0.81) → planning",
        ),
        ({}, {"impact": "medium", "urgency": "high"}, 1.0, None),
        # What a person set wins over a suggestion: the policy will not overwrite it.
        ({"impact": ("low", 0.99)}, {"impact": "high", "urgency": "high"}, 1.0, None),
    ],
)
def test_person_set_inputs_count_with_full_confidence(
    chosen: dict[str, tuple[str, float]],
    current: dict[str, str | None],
    confidence: float,
    reason: str | None,
) -> None:
    suggestions = {f: suggest(f, v, c) for f, (v, c) in chosen.items()}
    [result] = run(suggestions, current)
    assert result.confidence == pytest.approx(confidence)
    if reason is not None:
        assert result.reason == reason
    else:
        assert result.reason.count("(person)") == 2


def test_person_value_beats_a_suggestion_for_the_same_field() -> None:
    chosen = {"impact": suggest("impact", "low", 0.99), "urgency": suggest("urgency", "high", 0.9)}
    [result] = run(chosen, {"impact": "high"})
    assert result.value == "critical"


@pytest.mark.parametrize(
    ("chosen", "current"),
    [
        ({}, {}),
        ({"impact": ("high", 0.9)}, {}),
        ({"urgency": ("high", 0.9)}, {}),
        ({}, {"impact": "high"}),
        ({"impact": ("high", 0.9)}, {"urgency": None}),
        ({}, {"impact": None, "urgency": None}),
    ],
)
def test_abstains_when_an_input_is_missing(
    chosen: dict[str, tuple[str, float]], current: dict[str, str | None]
) -> None:
    suggestions = {f: suggest(f, v, c) for f, (v, c) in chosen.items()}
    assert run(suggestions, current) == []


def test_custom_matrix_from_the_mapping() -> None:
    mapping = make_mapping(
        values={"impact": {"wide": "1", "narrow": "2"}, "urgency": {"now": "1", "later": "2"}},
        priority_matrix={
            "wide": {"now": "p1", "later": "p2"},
            "narrow": {"now": "p3"},  # "later" deliberately left out
        },
    )
    chosen = {
        "impact": suggest("impact", "wide", 0.9),
        "urgency": suggest("urgency", "later", 0.95),
    }
    [result] = run(chosen, mapping=mapping)
    assert result.value == "p2"
    assert result.reason == "impact wide (0.90) × urgency later (0.95) → p2"
    # A combination the matrix does not name: abstain rather than guess.
    assert run(chosen, {"impact": "narrow"}, mapping=mapping) == []
    assert run({**chosen, "impact": suggest("impact", "unknown", 1.0)}, mapping=mapping) == []


def test_builds_on_keyword_suggestions_in_the_engine() -> None:
    mapping = make_mapping(
        keywords={
            "impact": {"high": ["hele butikken"], "low": ["kun mig"]},
            "urgency": {"high": ["haster"], "low": ["hvordan"]},
        }
    )
    chain: list[Enricher] = [KeywordEnricher(mapping), PriorityEnricher(mapping)]
    ticket = Ticket(title="Hele butikken er sort - det haster", description="")
    chosen = run_enrichers(chain, ticket)
    assert chosen["priority"].value == "critical"
    assert chosen["priority"].confidence == pytest.approx(0.85)
    quiet = run_enrichers(chain, Ticket(title="Hvordan skifter jeg baggrund?"))
    assert "priority" not in quiet  # urgency alone is not enough
