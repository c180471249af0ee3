"""``python -m triage dynamics register-webhook | rotate-key``: our Dataverse webhook, by API.

``register-webhook`` makes the environment hold exactly one registration of our webhook:

1. the ``serviceendpoint`` named ``--name`` (contract 8 Webhook) pointing at ``--url``, with
   authtype 5 *Http Header* (``<header>: <key>``, recommended) or 4 *Webhook Key* (``?code=``)
   as ``ENRICH_DATAVERSE_WEBHOOK__SOURCE`` says; created if missing, its ``url``/``authtype``
   corrected if they differ;
2. one ``sdkmessageprocessingstep`` on it for ``Create`` of ``incident``: stage 40
   Post-operation, mode 1 Asynchronous, rank 1, ``asyncautodelete`` true, enabled; created if
   missing, corrected if it differs.

Running it again changes nothing and says so. ``authvalue`` is write-only in Dataverse, so an
existing endpoint's key is never compared or rewritten here: that is ``rotate-key``, which sets
``authvalue`` from the first key of ``ENRICH_DATAVERSE_WEBHOOK__KEYS``. The key is read from the
settings only, never from the command line (it would land in shell history), and is never
printed. ``--dry-run`` reads what it needs and prints what it would do, writing nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO
from urllib.parse import parse_qsl, urlsplit

from domain.errors import ConfigError
from domain.settings import Settings, load_settings
from triage.dataverse_inbound import WebhookKeys

__all__ = [
    "DEFAULT_NAME",
    "Outcome",
    "WebhookSpec",
    "add_dynamics_parser",
    "main",
    "register_webhook",
    "rotate_key",
    "spec_from_settings",
]

DEFAULT_NAME = "triage-enrichment"
TABLE = "incident"
MESSAGE = "Create"
WANTED_STEP: dict[str, Any] = {"stage": 40, "mode": 1, "rank": 1, "asyncautodelete": True}
_AUTHTYPE_NAMES = {4: "WebhookKey", 5: "HttpHeader"}
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Admin(Protocol):
    """What the commands need of ``connectors.dataverse_admin.DataverseAdmin``."""

    def find_endpoint(self, name: str) -> Any: ...
    def message_id(self, message: str) -> str: ...
    def filter_id(self, message_id: str, table: str) -> str: ...
    def steps_of(self, endpoint_id: str) -> list[Any]: ...
    def create_endpoint(self, name: str, url: str, authtype: int, authvalue: str) -> str: ...
    def update_endpoint(self, endpoint_id: str, changes: dict[str, Any]) -> None: ...
    def create_step(
        self,
        name: str,
        *,
        endpoint_id: str,
        message_id: str,
        filter_id: str,
        stage: int,
        mode: int,
        rank: int,
        asyncautodelete: bool,
    ) -> str: ...
    def update_step(self, step_id: str, changes: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class WebhookSpec:
    """Our registration: endpoint name, auth type (4 or 5), header name and the current key."""

    name: str
    authtype: int
    header: str
    key: str = field(repr=False)
    keys_configured: int = 1

    @property
    def auth_label(self) -> str:
        """``HttpHeader x-triage-key`` or ``WebhookKey (?code=)``, never the key."""
        if self.authtype == 5:
            return f"HttpHeader {self.header}"
        return "WebhookKey (?code=)"

    def authvalue(self) -> str:
        """The ``authvalue`` to store (write-only in Dataverse)."""
        from connectors.dataverse_admin import header_authvalue

        return header_authvalue(self.header, self.key) if self.authtype == 5 else self.key


@dataclass
class Outcome:
    """What a command did (or, with ``dry_run``, would do); ``changed`` is False on a no-op."""

    lines: list[str] = field(default_factory=list)
    changed: bool = False
    endpoint_id: str | None = None
    step_id: str | None = None


def spec_from_settings(
    settings: Settings, *, name: str = DEFAULT_NAME, header: str | None = None
) -> WebhookSpec:
    """The registration from ``ENRICH_DATAVERSE_WEBHOOK__*``: the first key is the current one."""
    hook = settings.dataverse_webhook
    if not hook.keys:
        raise ConfigError(
            "no webhook key configured: set ENRICH_DATAVERSE_WEBHOOK__KEYS (a JSON list, the "
            "current key first), the same value as the function app's"
        )
    keys = WebhookKeys(
        keys=tuple(k.get_secret_value() for k in hook.keys),
        source=hook.source,
        header=header or hook.header,
    )
    authtype = 5 if keys.source == "header" else 4
    return WebhookSpec(name, authtype, keys.header, keys.keys[0], len(keys.keys))


def check_url(url: str) -> str:
    """The webhook URL: https (http only on loopback), no credentials, no ``code`` parameter."""
    parts = urlsplit(url)
    local = parts.hostname in _LOCAL_HOSTS
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise ConfigError("--url must be https://<app>.azurewebsites.net/api/dynamics/webhook")
    if not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ConfigError("--url must be a plain https URL without credentials or fragment")
    if any(k.lower() == "code" for k, _ in parse_qsl(parts.query, keep_blank_values=True)):
        raise ConfigError("--url must not carry ?code=: the key comes from the settings")
    if len(url) > 2000:
        raise ConfigError("--url is longer than the 2000 characters Dataverse stores")
    return url


def register_webhook(admin: Admin, spec: WebhookSpec, url: str, *, dry_run: bool) -> Outcome:
    """Find or create the endpoint and its Create-of-incident step; idempotent."""
    url = check_url(url)
    out = Outcome()
    _ensure_endpoint(admin, spec, url, out, dry_run)
    _ensure_step(admin, spec, out, dry_run)
    if not out.changed:
        out.lines.append("nothing to change: the webhook is registered as wanted")
    return out


def _verb(dry_run: bool, done: str, todo: str) -> str:
    return todo if dry_run else done


def _ensure_endpoint(
    admin: Admin, spec: WebhookSpec, url: str, out: Outcome, dry_run: bool
) -> None:
    endpoint = admin.find_endpoint(spec.name)
    if endpoint is None:
        out.changed = True
        out.lines.append(
            f"{_verb(dry_run, 'created', 'would create')} serviceendpoint {spec.name!r}: {url}, "
            f"contract 8 Webhook, authtype {spec.authtype} {spec.auth_label}"
        )
        if not dry_run:
            out.endpoint_id = admin.create_endpoint(spec.name, url, spec.authtype, spec.authvalue())
        return
    out.endpoint_id = endpoint.id
    changes: dict[str, Any] = {}
    notes: list[str] = []
    if endpoint.url != url:
        changes["url"] = url
        notes.append(f"url {endpoint.url} -> {url}")
    if endpoint.authtype != spec.authtype:
        changes.update(authtype=spec.authtype, authvalue=spec.authvalue())
        notes.append(f"authtype {endpoint.authtype} -> {spec.authtype} {spec.auth_label} (key set)")
    if not changes:
        out.lines.append(f"serviceendpoint {spec.name!r} ({endpoint.id}) unchanged")
        return
    out.changed = True
    out.lines.append(
        f"{_verb(dry_run, 'updated', 'would update')} serviceendpoint {spec.name!r} "
        f"({endpoint.id}): {'; '.join(notes)}"
    )
    if not dry_run:
        admin.update_endpoint(endpoint.id, changes)


def _ensure_step(admin: Admin, spec: WebhookSpec, out: Outcome, dry_run: bool) -> None:
    message_id = admin.message_id(MESSAGE)
    filter_id = admin.filter_id(message_id, TABLE)
    steps = [] if out.endpoint_id is None else admin.steps_of(out.endpoint_id)
    ours = [s for s in steps if s.message_id == message_id and s.filter_id == filter_id]
    if not ours:
        name = f"{spec.name}: {MESSAGE} of {TABLE}"
        out.changed = True
        out.lines.append(
            f"{_verb(dry_run, 'created', 'would create')} step {name!r}: stage 40 "
            "Post-operation, mode 1 Asynchronous, rank 1, asyncautodelete"
        )
        if not dry_run and out.endpoint_id is not None:
            out.step_id = admin.create_step(
                name,
                endpoint_id=out.endpoint_id,
                message_id=message_id,
                filter_id=filter_id,
                stage=WANTED_STEP["stage"],
                mode=WANTED_STEP["mode"],
                rank=WANTED_STEP["rank"],
                asyncautodelete=WANTED_STEP["asyncautodelete"],
            )
        return
    step = ours[0]
    out.step_id = step.id
    if len(ours) > 1:
        out.lines.append(
            f"warning: {len(ours)} steps send Create of {TABLE} to this endpoint (each case is "
            "posted once per step); delete all but one in the Plug-in Registration Tool"
        )
    fix = {k: v for k, v in WANTED_STEP.items() if getattr(step, k) != v}
    if step.statecode != 0:
        fix.update(statecode=0, statuscode=1)
    if not fix:
        out.lines.append(f"step {step.name!r} ({step.id}) unchanged")
        return
    out.changed = True
    shown = ", ".join(f"{k} {getattr(step, k, '?')} -> {v}" for k, v in fix.items())
    out.lines.append(
        f"{_verb(dry_run, 'updated', 'would update')} step {step.name!r} ({step.id}): {shown}"
    )
    if not dry_run:
        admin.update_step(step.id, fix)


def rotate_key(admin: Admin, spec: WebhookSpec, *, dry_run: bool) -> Outcome:
    """Set the endpoint's ``authvalue`` (and ``authtype``) from the current key in settings."""
    endpoint = admin.find_endpoint(spec.name)
    if endpoint is None:
        raise ConfigError(
            f"no webhook service endpoint named {spec.name!r}: run register-webhook first"
        )
    changes: dict[str, Any] = {"authvalue": spec.authvalue()}
    if endpoint.authtype != spec.authtype:
        changes["authtype"] = spec.authtype
    verb = "would set" if dry_run else "set"
    out = Outcome(changed=True, endpoint_id=endpoint.id)
    out.lines.append(
        f"{verb} the key of serviceendpoint {spec.name!r} ({endpoint.id}) to the first of the "
        f"{spec.keys_configured} key(s) in ENRICH_DATAVERSE_WEBHOOK__KEYS, "
        f"authtype {spec.authtype} {spec.auth_label}"
    )
    if spec.keys_configured < 2:
        out.lines.append(
            "note: only one key is configured; during a rotation the function app must accept "
            "the new and the old key until Dataverse sends the new one"
        )
    if not dry_run:
        admin.update_endpoint(endpoint.id, changes)
    return out


def add_dynamics_parser(sub: Any) -> None:
    """Add ``dynamics register-webhook`` and ``dynamics rotate-key`` to the CLI's subparsers."""
    dynamics = sub.add_parser("dynamics", help="Dynamics 365 / Dataverse administration")
    actions = dynamics.add_subparsers(dest="action", required=True)
    register = actions.add_parser(
        "register-webhook", help="create the serviceendpoint and its Create-of-incident step"
    )
    register.add_argument(
        "--url", required=True, help="https://<app>.azurewebsites.net/api/dynamics/webhook"
    )
    rotate = actions.add_parser(
        "rotate-key", help="set the endpoint's key to the first ENRICH_DATAVERSE_WEBHOOK__KEYS"
    )
    for parser in (register, rotate):
        parser.add_argument("--name", default=DEFAULT_NAME, help="serviceendpoint name")
        parser.add_argument(
            "--key-header",
            help="header carrying the key (default: ENRICH_DATAVERSE_WEBHOOK__HEADER)",
        )
        parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    dynamics.set_defaults(handler=lambda args: run(args))


def run(
    args: argparse.Namespace,
    *,
    settings: Settings | None = None,
    admin_factory: Callable[[Settings], Admin] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run a parsed ``dynamics`` command; settings and the Web API client can be passed in."""
    settings = settings if settings is not None else load_settings()
    spec = spec_from_settings(settings, name=args.name, header=args.key_header)
    admin = (admin_factory or _default_admin)(settings)
    try:
        if args.action == "register-webhook":
            outcome = register_webhook(admin, spec, args.url, dry_run=args.dry_run)
        else:
            outcome = rotate_key(admin, spec, dry_run=args.dry_run)
    finally:
        close = getattr(admin, "close", None)
        if callable(close):
            close()
    stream = out if out is not None else sys.stdout
    prefix = "dry run: " if args.dry_run else ""
    for line in outcome.lines:
        stream.write(f"{prefix}{line}\n")
    return 0


def main(argv: Sequence[str], **kwargs: Any) -> int:
    """Parse ``dynamics ...`` arguments and run them (``kwargs`` as for ``run``)."""
    parser = argparse.ArgumentParser(prog="python -m triage")
    add_dynamics_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv), **kwargs)


def _default_admin(settings: Settings) -> Admin:
    from connectors.dataverse_admin import DataverseAdmin

    if settings.dataverse is None:
        raise ConfigError("Dataverse is not configured (set ENRICH_DATAVERSE__ORG_URL)")
    return DataverseAdmin(settings.dataverse, settings.http)
