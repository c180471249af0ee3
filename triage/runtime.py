"""Builds the worker's long-lived objects once from app settings (like msal's long-lived app)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from domain.errors import ConfigError
from domain.settings import Settings
from triage.config_watch import MappingWatch, mapping_files
from triage.jobs import JOBS_QUEUE
from triage.service import Service

if TYPE_CHECKING:
    from connectors.shadow import ShadowStore
    from connectors.state import ClaimStore
    from domain.mapping import FieldMapping
    from domain.redact import Redactor
    from enrichers.learned import TextModel
    from enrichers.summary import Summarizer
    from triage.pipeline import Pipeline

__all__ = [
    "ConnectorOptions",
    "ServiceProvider",
    "build_pipelines",
    "build_service",
    "build_summarizer",
    "watched_provider",
]

log = logging.getLogger(__name__)

#: Extra keyword arguments for a platform's connector builder, by system ("servicenow",
#: "dataverse"): how a backfill plugs its own pacing into its own connectors.
ConnectorOptions = Callable[[str], dict[str, Any]]


def build_service(env: Mapping[str, str] | None = None) -> Service:
    """Settings → per platform: mapping, connector, enrichers, pipeline → one service.

    ServiceNow and Dynamics 365 (Dataverse) are each enabled by their settings; both may be.
    They share the queue, the claim store, the replay guard and the poison queue.
    """
    # Imported here so a bad setting fails the first invocation with ConfigError, not the import
    # of function_app (which would take every function down with an opaque indexing error).
    from connectors.queue import StorageJobQueue
    from connectors.table_state import TableClaimStore, TableReplayGuard
    from domain.redact import Redactor, install_log_redaction, secrets_of
    from domain.settings import load_settings
    from triage.dataverse_inbound import WebhookKeys

    env = os.environ if env is None else env
    # The ENRICH_BACKFILL__* settings are the backfill's (triage.backfill.service): left unread
    # here, so a broken one cannot stop live enrichment.
    settings = load_settings(backfill=False)
    # Every log record of the worker is scrubbed of every form of every configured secret.
    redactor = Redactor(secrets_of(settings))
    install_log_redaction(redactor)
    connection = settings.queue.connection_setting
    # Shared by every instance: exactly one write per (record, input) across the app.
    claims = TableClaimStore.from_settings(env, connection)
    records = None
    if settings.shadow_mode or settings.decision_log:
        from connectors.shadow import TableShadowStore

        records = TableShadowStore.from_settings(env, connection)
    pipelines = build_pipelines(settings, claims, redactor, records)
    if not pipelines:
        raise ConfigError(
            "no platform is configured: set ENRICH_SERVICENOW__INSTANCE_URL and/or "
            "ENRICH_DATAVERSE__ORG_URL"
        )
    hook = settings.dataverse_webhook
    keys = tuple(k.get_secret_value() for k in hook.keys)
    return Service(
        settings=settings,
        pipeline=pipelines[0],
        others={p.mapping.system: p for p in pipelines[1:]},
        requeue=StorageJobQueue.from_settings(env, connection, JOBS_QUEUE),
        poison=StorageJobQueue.from_settings(env, connection, f"{JOBS_QUEUE}-poison"),
        replay=TableReplayGuard.from_settings(env, connection),
        dataverse_keys=WebhookKeys(keys, hook.source, hook.header) if keys else None,
    )


def build_pipelines(
    settings: Settings,
    claims: ClaimStore,
    redactor: Redactor,
    records: ShadowStore | None,
    *,
    connector_options: ConnectorOptions | None = None,
) -> list[Pipeline]:
    """One pipeline per configured platform (ServiceNow first), each with a new connector.

    ``records`` receives shadow suggestions (shadow mode) or the decision log. The live
    service and the backfill both build theirs here, so they decide alike;
    ``connector_options(system)`` adds keyword arguments to that platform's connector builder
    (the backfill's pacing), none by default.
    """
    from domain.mapping import DYNAMICS_DEFAULT_MAPPING_PATH
    from enrichers import default_enrichers
    from triage.llm_wiring import add_llm_classifier
    from triage.mapping_store import load_mapping_from
    from triage.pipeline import Pipeline
    from triage.telemetry import throttle_hook

    given = connector_options or _no_options

    def options(system: str) -> dict[str, Any]:
        # Every 429, retried or not, is counted; a backfill's budget still hears of it.
        extra = dict(given(system))
        extra["on_throttle"] = throttle_hook(system, extra.get("on_throttle"))
        return extra

    pipelines = []
    summarizer = build_summarizer(settings)
    if settings.servicenow is not None:
        from connectors.servicenow import build_servicenow_connector

        mapping = load_mapping_from(settings.mapping_path)
        model = _model(settings.model_path, mapping, "ENRICH_MODEL_PATH")
        pipelines.append(
            Pipeline(
                connector=build_servicenow_connector(
                    settings, redactor=redactor, **options("servicenow")
                ),
                mapping=mapping,
                enrichers=add_llm_classifier(
                    default_enrichers(mapping, model=model, summarizer=summarizer),
                    mapping,
                    settings,
                ),
                claims=claims,
                dry_run=settings.dry_run,
                shadow=records if settings.shadow_mode else None,
                decision_log=None if settings.shadow_mode else records,
            )
        )
    if settings.dataverse is not None:
        from connectors.dataverse import build_dataverse_connector

        mapping = load_mapping_from(
            settings.dataverse_mapping_path or str(DYNAMICS_DEFAULT_MAPPING_PATH)
        )
        if mapping.system != "dataverse":
            raise ConfigError(
                "ENRICH_DATAVERSE_MAPPING_PATH: the mapping's system is not dataverse"
            )
        connector = build_dataverse_connector(
            settings,
            field_types=mapping.column_types(),
            redactor=redactor,
            **options("dataverse"),
        )
        pipelines.append(
            Pipeline(
                connector=connector,
                mapping=mapping,
                enrichers=add_llm_classifier(
                    default_enrichers(
                        mapping,
                        model=_model(
                            settings.dataverse_model_path, mapping, "ENRICH_DATAVERSE_MODEL_PATH"
                        ),
                        summarizer=summarizer,
                    ),
                    mapping,
                    settings,
                ),
                claims=claims,
                dry_run=settings.dry_run,
                shadow=records if settings.shadow_mode else None,
                decision_log=None if settings.shadow_mode else records,
            )
        )
    return pipelines


def _no_options(system: str) -> dict[str, Any]:
    return {}


def _model(path: str | None, mapping: FieldMapping, setting: str) -> TextModel | None:
    """The configured model, refused (``ConfigError`` naming the setting) unless it fits."""
    if not path:
        return None
    from triage.model_fit import check_model_fits
    from triage.model_store import load_model  # numpy: only when a model is configured

    model = load_model(path)
    try:
        check_model_fits(model, mapping)
    except ConfigError as exc:  # the path may be a URL with a SAS: name the setting instead
        raise ConfigError(f"{setting}: {exc}") from exc
    return model


def build_summarizer(settings: Settings) -> Summarizer | None:
    """Azure OpenAI with the extractive summarizer as fallback, when configured; else None."""
    if settings.azure_openai is None:
        return None
    import requests

    from enrichers.azure_openai import AzureOpenAISummarizer
    from enrichers.summary import ExtractiveSummarizer, FallbackSummarizer

    cfg = settings.azure_openai
    primary = AzureOpenAISummarizer(
        str(cfg.endpoint),
        cfg.deployment,
        cfg.api_key,
        session=requests.Session(),
        api_version=cfg.api_version,
    )
    return FallbackSummarizer(primary, ExtractiveSummarizer())


class ServiceProvider:
    """Builds the service on first use, once per worker; tests ``override`` it with fakes.

    With a ``watch``, a changed admin mapping rebuilds the service on the next use (see
    ``triage.config_watch``); an invalid change keeps the previous service.
    """

    def __init__(
        self, factory: Callable[[], Service] = build_service, *, watch: MappingWatch | None = None
    ) -> None:
        self._factory = factory
        self._service: Service | None = None
        self._watch = watch
        self._failure: ConfigError | None = None
        self._lock = threading.Lock()

    def get(self) -> Service:
        """The worker's service, built on first use (rebuilt when the mapping changed).

        With a watch, a failed first build is logged once and remembered: later calls raise the
        same ``ConfigError`` without rebuilding until a watched mapping file changes.
        """
        with self._lock:
            if self._service is None:
                failed = self._failure
                if failed is not None and self._watch is not None and not self._watch.changed():
                    raise failed
                try:
                    self._service = self._build()
                except ConfigError as exc:
                    log.error("the service cannot start: %s", exc)
                    self._failure = exc
                    raise
                self._failure = None
            elif self._watch is not None and self._watch.changed():
                try:
                    self._service = self._build()
                    log.info("admin mapping changed: service rebuilt")
                except ConfigError as exc:
                    self._watch.refused(exc)
            return self._service

    def _build(self) -> Service:
        if self._watch is not None:
            self._watch.built()  # the identity read before the build: a later save is seen
        return self._factory()

    def set_factory(self, factory: Callable[[], Service]) -> Callable[[], Service]:
        """Build with ``factory`` from now on (forgetting any built service); returns the old one."""
        with self._lock:
            old, self._factory, self._service = self._factory, factory, None
            return old

    def override(self, service: Service | None) -> None:
        """Use ``service`` from now on (``None`` rebuilds from settings on next use)."""
        with self._lock:
            self._service = service


def watched_provider(env: Mapping[str, str] | None = None) -> ServiceProvider:
    """The worker's provider: built from settings, rebuilt when a mapping file changes."""
    env = os.environ if env is None else env
    return ServiceProvider(build_service, watch=MappingWatch(lambda: mapping_files(env)))
