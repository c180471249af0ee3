"""Pure enrichers: each suggests field values for a ticket, with a confidence and a reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

from enrichers.base import Enricher
from enrichers.engine import run_enrichers

if TYPE_CHECKING:
    from domain.mapping import FieldMapping
    from enrichers.learned import TextModel
    from enrichers.summary import Summarizer
    from enrichers.summary_model import SummaryModel

__all__ = ["Enricher", "default_enrichers", "run_enrichers"]


def default_enrichers(
    mapping: FieldMapping,
    *,
    model: TextModel | None = None,
    summarizer: Summarizer | None = None,
    summary_model: SummaryModel | None = None,
) -> list[Enricher]:
    """The one place the enricher list is assembled, in precedence order.

    Admin keyword rules override the learned model; priority is derived from whatever impact
    and urgency were chosen; the summary comes last. The summary is the given ``summarizer``
    (e.g. Azure OpenAI), else the learned summary (``summary_model``, or the ``summary`` part
    of ``model``'s model.json when it has one), else the extractive one.
    """
    from enrichers.keywords import KeywordEnricher
    from enrichers.priority import PriorityEnricher
    from enrichers.summary import SummaryEnricher

    chain: list[Enricher] = [KeywordEnricher(mapping)]
    if model is not None:
        from enrichers.learned import LearnedEnricher

        chain.append(LearnedEnricher(model))
        if summary_model is None:
            from enrichers.summary_model import SummaryModel

            summary_model = SummaryModel.from_metadata(model.metadata)
    chain.append(PriorityEnricher(mapping))
    chain.append(SummaryEnricher(summarizer, model=summary_model))
    return chain
