"""What would be written and why, field by field, touching no platform.

``explain_ticket`` is the one explainable view: every canonical field (and every admin or model
label field the mapping or enrichers know) with its ``value`` (``None`` when nothing would be
suggested), ``confidence``, ``source``, ``would_write`` (per ``triage.policy.decide``),
``action``, the suggestion's ``reason`` or, when the enrichers abstained, why, and the
policy's ``why``. ``python -m triage enrich --format jsonl`` prints it per row;
``POST /api/preview`` answers it for one ticket (``preview_call``).

``preview_call`` takes the raw request and the service's ``pipeline_for``; it uses only the
pipeline's mapping and enrichers (never its connector). Every refusal is a 4xx
``{"error": {"code", "message"}}`` naming the problem without echoing the input.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.errors import EnrichmentError, InboundError
from domain.mapping import FieldMapping
from domain.models import CANONICAL_FIELDS, FIELD_NAME_PATTERN, Ticket
from enrichers.base import Enricher
from enrichers.engine import Explained, run_enrichers_explained
from triage.inbound import (
    bounded,
    check_size,
    describe_validation_error,
    excerpt,
    json_object,
)
from triage.pipeline import Pipeline
from triage.policy import decide
from triage.replies import WebhookReply, error_reply

__all__ = [
    "MAX_PREVIEW_BYTES",
    "PLATFORM_SYSTEMS",
    "PreviewRequest",
    "explain_ticket",
    "field_names",
    "parse_preview",
    "preview_call",
    "preview_ticket",
]

log = logging.getLogger(__name__)

#: The largest preview body accepted (413 above it).
MAX_PREVIEW_BYTES = 64 * 1024
#: The request's ``platform`` → the system of the pipeline that answers it.
PLATFORM_SYSTEMS = {"servicenow": "servicenow", "dynamics": "dataverse"}
#: Fields derived from others: "model not configured" says nothing about them.
_DERIVED = frozenset({"priority", "summary"})
_TEXT_FIELDS = frozenset({"title", "description"})
_MAX_TITLE = 1000
_MAX_CURRENT_VALUE = 200

_CurrentKey = Annotated[str, Field(pattern=FIELD_NAME_PATTERN)]
_CurrentValue = Annotated[str, Field(max_length=_MAX_CURRENT_VALUE)] | None


class PreviewRequest(BaseModel):
    """The body of ``POST /api/preview``: ticket text, the platform, optional current values."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    title: str = Field("", max_length=_MAX_TITLE)
    description: str = Field("", max_length=MAX_PREVIEW_BYTES)
    platform: Literal["servicenow", "dynamics"]
    current: dict[_CurrentKey, _CurrentValue] = Field(default_factory=dict, max_length=64)


def field_names(mapping: FieldMapping, explained: Explained | None = None) -> list[str]:
    """The canonical fields, then every other label field the mapping or enrichers name."""
    extra = set(mapping.fields) | set(mapping.values) | set(mapping.keywords)
    if explained is not None:
        extra |= set(explained.chosen) | set(explained.abstentions)
    extra -= {*CANONICAL_FIELDS, *_TEXT_FIELDS}
    return [*CANONICAL_FIELDS, *sorted(extra)]


def explain_ticket(
    ticket: Ticket, enrichers: Sequence[Enricher], mapping: FieldMapping
) -> dict[str, dict[str, Any]]:
    """Field → ``{value, confidence, source, would_write, action, reason, why}`` for a ticket.

    A field with no suggestion has ``value`` None and, as ``reason``, why each enricher that
    explains itself abstained ("keywords: ambiguous: ...; model: below the 0.80 threshold
    (0.72) for hardware"), or that no rule or model covers it.
    """
    explained = run_enrichers_explained(enrichers, ticket)
    decisions = {d.field: d for d in decide(ticket, explained.chosen, mapping)}
    from enrichers.learned import LearnedEnricher  # numpy: only when a preview is asked for

    has_model = any(isinstance(e, LearnedEnricher) for e in enrichers)
    out: dict[str, dict[str, Any]] = {}
    for name in field_names(mapping, explained):
        suggestion = explained.chosen.get(name)
        if suggestion is None:
            out[name] = {
                "value": None,
                "confidence": None,
                "source": None,
                "would_write": False,
                "action": None,
                "reason": _abstained(name, explained, mapping, has_model=has_model),
                "why": None,
            }
            continue
        decision = decisions.get(name)
        out[name] = {
            "value": suggestion.value,
            "confidence": round(suggestion.confidence, 4),
            "source": suggestion.source,
            "would_write": decision is not None and decision.action == "write",
            "action": decision.action if decision is not None else "off",
            "reason": suggestion.reason,
            "why": decision.why if decision is not None else "the field is off (mapping)",
        }
    return out


def _abstained(name: str, explained: Explained, mapping: FieldMapping, *, has_model: bool) -> str:
    parts = [f"{a.source}: {a.reason}" for a in explained.abstentions.get(name, ())]
    if name not in _DERIVED:
        if name not in mapping.keywords:
            parts.append("no keyword rules for this field")
        if not has_model:
            parts.append("model not configured")
    return "; ".join(parts) or "no enricher suggests this field"


def preview_ticket(request: PreviewRequest, mapping: FieldMapping) -> Ticket:
    """The ticket a preview request stands for, read as the pipeline would read it.

    Fields the request leaves out are unset; where the summary lands in the title field
    (ServiceNow's short_description), a title counts as a summary already set.
    """
    known = set(field_names(mapping))
    unknown = sorted(set(request.current) - known)
    if unknown:
        raise InboundError(
            bounded(
                f"current.{excerpt(unknown[0])}: not a field of the {request.platform} mapping "
                f"(known: {', '.join(sorted(known))})"
            ),
            code="invalid_body",
        )
    current: dict[str, str | None] = dict.fromkeys(CANONICAL_FIELDS)
    summary_column = mapping.fields.get("summary")
    if summary_column is not None and summary_column == mapping.fields.get("title"):
        current["summary"] = request.title.strip() or None
    current.update({k: (v.strip() or None) if v else None for k, v in request.current.items()})
    return Ticket(
        system=mapping.system,
        record_id="preview",
        title=request.title,
        description=request.description,
        current=current,
    )


def parse_preview(body: bytes, content_type: str | None, *, max_bytes: int) -> PreviewRequest:
    """Validate a preview body (size, media type, strict UTF-8 JSON, schema) or raise 4xx."""
    check_size(body, max_bytes)
    data = json_object(body, content_type)
    try:
        request = PreviewRequest.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc, what="body")
        raise InboundError(
            bounded(f"invalid preview body: {problems}"), code="invalid_body"
        ) from exc
    if not (request.title.strip() or request.description.strip()):
        raise InboundError("give a title or a description", code="invalid_body")
    return request


def preview_call(
    body: bytes,
    headers: Mapping[str, str],
    pipeline_for: Callable[[str], Pipeline | None],
    *,
    max_bytes: int = MAX_PREVIEW_BYTES,
) -> WebhookReply:
    """Answer ``POST /api/preview``: 200 with the explained fields, or a 4xx; never raises.

    Uses the platform pipeline's mapping and enrichers only: no platform is read or written.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        request = parse_preview(body, lowered.get("content-type"), max_bytes=max_bytes)
        system = PLATFORM_SYSTEMS[request.platform]
        pipeline = pipeline_for(system)
        if pipeline is None:
            raise InboundError(
                f"platform {request.platform} is not configured here", code="not_configured"
            )
        ticket = preview_ticket(request, pipeline.mapping)
    except InboundError as exc:
        return error_reply(exc.status, exc.code, bounded(str(exc)))
    try:
        fields = explain_ticket(ticket, pipeline.enrichers, pipeline.mapping)
    except EnrichmentError as exc:  # an enricher's remote model failed: not the caller's fault
        log.warning("preview failed in an enricher: %s", type(exc).__name__)
        return error_reply(503, "unavailable", "an enricher is unavailable; try again")
    answer = {
        "platform": request.platform,
        "mapping_version": pipeline.mapping.fingerprint,
        "fields": fields,
        "would_write": sorted(f for f, row in fields.items() if row["would_write"]),
    }
    return WebhookReply(200, answer)
