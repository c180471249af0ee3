"""The answer to a webhook call: HTTP status, a small JSON body, and the job to enqueue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triage.jobs import EnrichJob

__all__ = ["WebhookReply", "error_reply"]


@dataclass(frozen=True)
class WebhookReply:
    """The HTTP answer to a webhook call, and the job to enqueue when accepted."""

    status: int
    body: dict[str, Any]
    job: EnrichJob | None = None


def error_reply(status: int, code: str, message: str) -> WebhookReply:
    """A refusal: ``{"error": {"code", "message"}}`` (the message is already bounded)."""
    return WebhookReply(status, {"error": {"code": code, "message": message}})
