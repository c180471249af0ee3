"""Reading an LLM classifier's answer: labels checked against those asked, confidence from logprobs.

``parse_answer`` reads a chat completions response field by field: a value outside the field's
labels, a filtered, refused, cut or malformed answer, a subcategory outside the answered
category, or no log-probabilities (unless a fixed confidence is given) abstains.
``logprob_confidence`` is ``exp`` of the summed logprobs of the tokens that spell a value and its
closing quote. Pure; ``enrichers.llm_classifier`` (the request side) re-exports every public name.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldAnswer", "logprob_confidence", "parse_answer"]

_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class FieldAnswer:
    """What the answer says for one field: a label and its confidence, or None and why not."""

    label: str | None
    confidence: float
    reason: str


def parse_answer(
    response: Mapping[str, Any],
    asked: Mapping[str, Sequence[str]],
    *,
    parents: Mapping[str, str] | None = None,
    fallback_confidence: float | None = None,
    model_name: str = "llm",
) -> dict[str, FieldAnswer]:
    """Read a chat completions answer: per asked field, a mapped label with its confidence.

    Anything else abstains, field by field: a filtered, refused, cut or malformed answer, a
    value outside the field's labels, a subcategory outside the answered category, or no
    log-probabilities (unless ``fallback_confidence`` is given).
    """

    def every(reason: str) -> dict[str, FieldAnswer]:
        return {f: FieldAnswer(None, 0.0, reason) for f in asked}

    choices = response.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return every(f"{model_name}: the answer had no choice")
    finish = choice.get("finish_reason")
    if finish == "content_filter":
        return every(f"{model_name}: the endpoint's content filter withheld the answer")
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    content = message.get("content")
    if message.get("refusal") or not isinstance(content, str):
        return every(f"{model_name}: the model gave no answer")
    if finish == "length":
        return every(f"{model_name}: the answer was cut off")
    try:
        data = json.loads(content)
    except ValueError:
        return every(f"{model_name}: the answer is not JSON")
    if not isinstance(data, dict):
        return every(f"{model_name}: the answer is not a JSON object")
    logprobs = choice.get("logprobs")
    tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
    out: dict[str, FieldAnswer] = {}
    for field, labels in asked.items():
        value = data.get(field)
        if not isinstance(value, str) or value not in labels:
            out[field] = FieldAnswer(
                None, 0.0, f"{model_name}: an answer outside the {field} labels"
            )
            continue
        found = logprob_confidence(content, tokens, field, labels)
        if found is None and fallback_confidence is None:
            out[field] = FieldAnswer(
                None, 0.0, f"{model_name}: {value} without token log-probabilities"
            )
            continue
        confidence, runner_up = found if found is not None else (fallback_confidence or 0.0, "")
        how = "token log-probabilities" if found is not None else "fixed, no log-probabilities"
        out[field] = FieldAnswer(
            value, confidence, f"{model_name}: {value} p={confidence:.2f} ({how}){runner_up}"
        )
    _check_parents(out, parents or {}, model_name)
    return out


def _check_parents(out: dict[str, FieldAnswer], parents: Mapping[str, str], model: str) -> None:
    category, sub = out.get("category"), out.get("subcategory")
    if category is None or sub is None or category.label is None or sub.label is None:
        return
    parent = parents.get(sub.label)
    if parent is not None and parent != category.label:
        out["subcategory"] = FieldAnswer(
            None, 0.0, f"{model}: subcategory {sub.label} is not under category {category.label}"
        )


def logprob_confidence(
    content: str, tokens: Any, field: str, labels: Sequence[str] = ()
) -> tuple[float, str] | None:
    """(confidence, runner-up note) of ``field``'s value in a JSON answer; None if unknowable.

    The confidence is ``exp`` of the summed logprobs of the tokens that overlap the value and
    its closing quote. The tokens must spell ``content`` exactly (as text, else as UTF-8 bytes).
    The note names the likeliest other label at the value's first token when ``top_logprobs``
    shows one that starts exactly one label.
    """
    if not isinstance(tokens, list) or not tokens:
        return None
    span = _value_span(content, field)
    offsets = _token_offsets(content, tokens)
    if span is None or offsets is None:
        return None
    starts, unit = offsets
    lo, hi = span if unit == "char" else (_byte_at(content, span[0]), _byte_at(content, span[1]))
    total, first = 0.0, None
    for i, token in enumerate(tokens):
        begin, end = starts[i], starts[i + 1]
        if end > lo and begin < hi:
            logprob = token.get("logprob")
            if not isinstance(logprob, int | float) or math.isnan(logprob):
                return None
            total += float(logprob)
            first = i if first is None else first
    if first is None:
        return None
    confidence = min(1.0, max(0.0, math.exp(total)))
    return confidence, _runner_up(tokens[first], content[span[0] : span[1] - 1], labels)


def _value_span(content: str, field: str) -> tuple[int, int] | None:
    """[start of the value, end of its closing quote) of the last ``"field": "..."`` pair."""
    span = None
    for match in _PAIR.finditer(content):
        try:
            key = json.loads(f'"{match.group(1)}"')
        except ValueError:
            continue
        if key == field:
            span = (match.start(2), match.end(2) + 1)
    return span


def _token_offsets(content: str, tokens: list[Any]) -> tuple[list[int], str] | None:
    """Start offsets of every token (plus the end), in chars or UTF-8 bytes; None if no match."""
    texts = [t.get("token") if isinstance(t, dict) else None for t in tokens]
    if all(isinstance(t, str) for t in texts) and "".join(map(str, texts)) == content:
        return _cumulative([len(str(t)) for t in texts]), "char"
    pieces = [t.get("bytes") if isinstance(t, dict) else None for t in tokens]
    if not all(isinstance(p, list) for p in pieces):
        return None
    try:
        joined = b"".join(bytes(p) for p in pieces if isinstance(p, list))
    except (TypeError, ValueError):
        return None
    if joined != content.encode("utf-8"):
        return None
    return _cumulative([len(p) for p in pieces if isinstance(p, list)]), "byte"


def _cumulative(lengths: list[int]) -> list[int]:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def _byte_at(content: str, char_index: int) -> int:
    return len(content[:char_index].encode("utf-8"))


def _runner_up(token: Mapping[str, Any], value: str, labels: Sequence[str]) -> str:
    chosen = token.get("token")
    alternatives = token.get("top_logprobs")
    if not isinstance(alternatives, list):
        return ""
    for alt in alternatives:
        if not isinstance(alt, dict) or alt.get("token") == chosen:
            continue
        piece = str(alt.get("token", "")).lstrip(' "')
        logprob = alt.get("logprob")
        matches = [x for x in labels if piece and x != value and x.startswith(piece)]
        if len(matches) == 1 and isinstance(logprob, int | float):
            return f"; next {matches[0]} p={math.exp(float(logprob)):.2f}"
    return ""
