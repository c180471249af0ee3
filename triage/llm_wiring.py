"""Settings → chat completions client → cache → ``LlmClassifier``; off unless ``ENRICH_LLM__*``.

Nothing here imports the connector or the classifier until ``settings.llm`` is set, so a cold
start without the LLM pays nothing for it.

``add_llm_classifier(enrichers, mapping, settings)`` is the one call site's helper: it puts the
classifier into an enricher list in precedence order, after the admin's keyword rules and a
model trained on the desk's history (both more specific to the desk), before the derived
priority and the summary (so priority can be derived from the LLM's impact and urgency).

The cache (``CachedCompletion``) keys each answer by the SHA-256 of the whole request body (the
prompt holds the taxonomy's labels and descriptions and the sanitised ticket text, so any
change of either misses) and keeps the ``cache_size`` most recent ones in memory, per process:
a redelivered job, a retry after a lost write or a backfill over a ticket seen live costs no
second request. Only successful answers are kept. There is no shared (Table Storage) cache:
a Functions instance's cache lives as long as the instance (docs/llm.md).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from domain.errors import ConfigError

if TYPE_CHECKING:
    import requests

    from domain.mapping import FieldMapping
    from domain.settings import LlmClassifierSettings, Settings
    from enrichers.base import Enricher
    from enrichers.llm_classifier import LlmClassifier

__all__ = [
    "BEFORE",
    "CachedCompletion",
    "add_llm_classifier",
    "build_llm_classifier",
    "request_key",
]

#: The LLM classifier goes before the first of these enrichers (by name), else at the end.
BEFORE = ("priority", "summary")

Complete = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def request_key(request: Mapping[str, Any]) -> str:
    """SHA-256 of a request body in canonical JSON: the cache key."""
    text = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedCompletion:
    """A ``complete`` callable with an in-memory LRU cache keyed by ``request_key``.

    Thread-safe; two threads asking the same new request at once may both send it (the cost of
    not holding a lock over network I/O). ``hits`` and ``misses`` count lookups.
    """

    def __init__(self, complete: Complete, maxsize: int = 2048) -> None:
        self._complete = complete
        self._maxsize = maxsize
        self._entries: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __call__(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """The cached answer to ``request``, or the endpoint's (then cached)."""
        key = request_key(request)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            self.misses += 1
        answer = self._complete(request)  # errors propagate and are not cached
        if self._maxsize > 0:
            with self._lock:
                self._entries[key] = answer
                self._entries.move_to_end(key)
                while len(self._entries) > self._maxsize:
                    self._entries.popitem(last=False)
        return answer

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_clients: dict[str, CachedCompletion] = {}
_clients_lock = threading.Lock()


def _cached_client(settings: Settings, session: requests.Session | None) -> CachedCompletion:
    """One cached client per LLM configuration and process (mapping reloads keep the cache)."""
    from connectors.chat_completions import build_chat_completions

    llm = settings.llm
    if llm is None:
        raise ConfigError("the LLM classifier is not configured (ENRICH_LLM__ENDPOINT)")
    if session is not None:  # a caller's own session (tests, evaluate): a fresh cache
        client = build_chat_completions(settings, session=session)
        return CachedCompletion(client.complete, llm.cache_size)
    config = llm.model_dump(mode="json", exclude={"api_key"})
    # A rotated key must get a new client: its hash (never the key) is part of the identity.
    config["key_sha256"] = hashlib.sha256(llm.api_key.get_secret_value().encode()).hexdigest()
    key = request_key({"llm": config, "http": settings.http.model_dump(mode="json")})
    with _clients_lock:
        cached = _clients.get(key)
        if cached is None:
            client = build_chat_completions(settings)
            cached = _clients[key] = CachedCompletion(client.complete, llm.cache_size)
        return cached


def build_llm_classifier(
    settings: Settings,
    mapping: FieldMapping,
    *,
    fields: list[str] | None = None,
    session: requests.Session | None = None,
    complete: Complete | None = None,
) -> LlmClassifier | None:
    """The configured classifier for ``mapping``, or None when ``ENRICH_LLM__*`` is not set.

    ``fields`` overrides ``settings.llm.fields``; ``complete`` replaces the HTTP client (and
    its cache), ``session`` the HTTP session.
    """
    if settings.llm is None:
        return None
    from enrichers.llm_classifier import LlmClassifier

    llm: LlmClassifierSettings = settings.llm
    return LlmClassifier(
        mapping,
        complete if complete is not None else _cached_client(settings, session),
        fields=fields if fields is not None else llm.fields,
        max_input_chars=llm.max_input_chars,
        top_logprobs=llm.top_logprobs,
        confidence_without_logprobs=llm.confidence_without_logprobs,
        model_name=llm.deployment,
    )


def add_llm_classifier(
    enrichers: list[Enricher],
    mapping: FieldMapping,
    settings: Settings,
    *,
    complete: Complete | None = None,
) -> list[Enricher]:
    """``enrichers`` with the LLM classifier inserted when configured (see the module doc).

    Returns the same list object, changed in place; unchanged when the LLM is off or the mapping
    has no labels for any of its fields.
    """
    classifier = build_llm_classifier(settings, mapping, complete=complete)
    if classifier is None or not classifier.fields:
        return enrichers
    names = [getattr(e, "name", "") for e in enrichers]
    at = next((i for i, n in enumerate(names) if n in BEFORE), len(enrichers))
    enrichers.insert(at, classifier)
    return enrichers
