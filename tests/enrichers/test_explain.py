"""Why the enrichers abstained: each reason kind, and the engine that collects them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from domain.mapping import load_mapping
from domain.models import Suggestion, Ticket
from enrichers import default_enrichers
from enrichers.base import Enricher, Explains
from enrichers.engine import Abstention, run_enrichers, run_enrichers_explained
from enrichers.features import FeatureConfig
from enrichers.keywords import KeywordEnricher
from enrichers.learned import LearnedEnricher, TextModel
from enrichers.priority import PriorityEnricher
from enrichers.summary import SummaryCandidate, SummaryEnricher
from tests.enrichers.test_keywords import MAPPING
from tests.fakes import FixedEnricher, suggestion
from tests.learn import make_tickets, texts_of
from triage.learn.train import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[2]


def explain(enricher: Explains, title: str = "", description: str = "", **current: str) -> dict:
    return dict(enricher.explain(Ticket(title=title, description=description, current=current), {}))


# --- the engine ---------------------------------------------------------------------------------


class Silent:
    """An enricher without ``explain``: the protocol stays backward compatible."""

    name = "silent"

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        return []


class Abstains:
    name = "abstains"

    def __init__(self, reasons: dict[str, str]) -> None:
        self.reasons = reasons
        self.seen: list[dict[str, Suggestion]] = []

    def enrich(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Sequence[Suggestion]:
        return []

    def explain(self, ticket: Ticket, chosen: Mapping[str, Suggestion]) -> Mapping[str, str]:
        self.seen.append(dict(chosen))
        return self.reasons


def test_explained_run_chooses_exactly_what_run_enrichers_chooses() -> None:
    mapping = load_mapping()
    chain = default_enrichers(mapping)
    for row in (ROOT / "examples" / "tickets.csv").read_text(encoding="utf-8").splitlines()[1:15]:
        ticket = Ticket(title=row[:40], description=row)
        assert run_enrichers_explained(chain, ticket).chosen == run_enrichers(chain, ticket)


def test_only_unchosen_fields_keep_their_reasons_in_precedence_order() -> None:
    first = Abstains({"category": "first said no", "impact": "no cue"})
    second = Abstains({"impact": "second said no too"})
    fills = FixedEnricher([suggestion("category", "network")])
    chain: list[Enricher] = [first, Silent(), fills, second]
    assert not isinstance(Silent(), Explains) and isinstance(first, Explains)
    result = run_enrichers_explained(chain, Ticket(title="x"))
    assert set(result.chosen) == {"category"}
    assert result.abstentions == {
        "impact": (Abstention("abstains", "no cue"), Abstention("abstains", "second said no too"))
    }
    # Each enricher explains itself with what was chosen before its turn.
    assert first.seen == [{}] and set(second.seen[0]) == {"category"}


def test_reasons_are_cut_to_300_characters() -> None:
    result = run_enrichers_explained([Abstains({"impact": "x" * 5000})], Ticket(title="x"))
    assert len(result.abstentions["impact"][0].reason) == 300


# --- keywords -----------------------------------------------------------------------------------


def test_keywords_no_cue_found_for_every_field_with_rules() -> None:
    reasons = explain(KeywordEnricher(MAPPING), "Hello", "Nothing to see here")
    assert set(reasons) == set(MAPPING.keywords)
    assert set(reasons.values()) == {"no cue found"}


def test_keywords_ambiguity_names_both_values_and_their_shares() -> None:
    # printer (hardware, title 2) vs network (title 2): 0.50 each, below the 0.60 share.
    reasons = explain(KeywordEnricher(MAPPING), "Printer network")
    assert reasons["category"].startswith("ambiguous: hardware 0.50 vs network 0.50")
    assert "category" not in {s.field for s in KeywordEnricher(MAPPING, min_confidence=0.0)
                              .enrich(Ticket(title="Printer network"), {})}  # fmt: skip


def test_keywords_below_the_floor_names_floor_score_and_keyword() -> None:
    enricher = KeywordEnricher(MAPPING)
    ticket = Ticket(title="Hello", description="the printer again")  # body only: weight 1
    assert enricher.enrich(ticket, {}) == []
    reason = dict(enricher.explain(ticket, {}))["category"]
    assert reason == 'below the 0.75 floor (0.70) for hardware: keyword "printer*" in body'


def test_keywords_say_nothing_about_fields_they_suggest() -> None:
    reasons = explain(KeywordEnricher(MAPPING), "Outage: printer broken for all users")
    assert "category" not in reasons and "impact" not in reasons
    assert reasons["urgency"] == "no cue found"


def test_keywords_subcategory_under_another_category() -> None:
    enricher = KeywordEnricher(MAPPING)
    ticket = Ticket(title="VPN", description="", current={"category": "hardware"})
    assert "subcategory" not in {s.field for s in enricher.enrich(ticket, {})}
    reason = dict(enricher.explain(ticket, {}))["subcategory"]
    assert reason == "subcategory vpn belongs to category network, not hardware"


# --- the learned model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> TextModel:
    rows = make_tickets(200, seed=11, label_noise=0.0)
    subs = [None if r["category"] == "software" else r["subcategory"] for r in rows]
    return train_model(
        texts_of(rows),
        {"category": [r["category"] for r in rows], "subcategory": subs},
        parents={"subcategory": "category"},
        config=TrainConfig(features=FeatureConfig(min_df=1)),
    )


VPN = Ticket(title="VPN tunnel", description="vpn forbindelse remote anslutning")


def test_learned_below_threshold_and_missing_parent(model: TextModel) -> None:
    enricher = LearnedEnricher(model)
    assert {s.field for s in enricher.enrich(VPN, {})} == {"category", "subcategory"}
    assert explain(enricher, VPN.title, VPN.description) == {}
    strict = model.metadata["fields"]["category"]
    original = strict["threshold"]
    strict["threshold"] = 1.0  # calibrated confidences stay below 1
    try:
        assert enricher.enrich(VPN, {}) == []
        reasons = explain(enricher, VPN.title, VPN.description)
    finally:
        strict["threshold"] = original
    # A confidence that would print as the threshold itself gets more digits.
    assert re.fullmatch(r"below the 1\.00 threshold \(0\.9\d{3}\) for network", reasons["category"])
    assert reasons["subcategory"] == "subcategory vpn needs a known category, and none was chosen"


def test_learned_parent_without_labels(model: TextModel) -> None:
    reasons = explain(
        LearnedEnricher(model), "Outlook mail", "outlook postkasse", category="software"
    )
    assert reasons["subcategory"] == "the model has no label of subcategory for category software"


# --- priority and summary -----------------------------------------------------------------------


def test_priority_names_what_it_lacked_or_the_missing_matrix_entry() -> None:
    enricher = PriorityEnricher(load_mapping())
    assert explain(enricher) == {"priority": "needs impact and urgency; no impact and no urgency"}
    assert explain(enricher, impact="high") == {"priority": "needs impact and urgency; no urgency"}
    assert explain(enricher, impact="high", urgency="high") == {}
    odd = explain(enricher, impact="high", urgency="whenever")
    assert odd == {"priority": "no matrix entry for impact high × urgency whenever"}


class Nothing:
    name = "nothing"

    def summarize(self, title: str, text: str) -> SummaryCandidate | None:
        return None


def test_summary_reasons() -> None:
    enricher = SummaryEnricher(Nothing())
    assert explain(enricher, "VPN virker ikke på kontoret") == {}
    assert explain(enricher) == {"summary": "no title and no description to summarise"}
    assert explain(enricher, "Hej") == {
        "summary": "an uninformative title and no description to summarise"
    }
    ticket = Ticket(title="", description="Hej\n\nMed venlig hilsen\nPeter")
    assert enricher.enrich(ticket, {}) == []
    assert dict(enricher.explain(ticket, {}))["summary"].startswith("nothing found too little")
