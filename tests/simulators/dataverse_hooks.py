"""Registered webhook steps of the Dataverse simulator and when they fire (dataverse.md §9).

A step is an async PostOperation Create step on ``incident``. A committed create fires every
step, except with ``MSCRM.BypassBusinessLogicExecution: CustomAsync`` (all custom async logic)
or with the step's id in ``MSCRM.BypassBusinessLogicExecutionStepIds`` [BYPASS].
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping

from tests.simulators.dataverse_store import Store
from tests.simulators.dataverse_webhook import (
    Delivery,
    Webhook,
    WebhookEmitter,
    build_context,
    encode_body,
)

__all__ = ["WebhookHub"]


class WebhookHub:
    """Steps, the RemoteExecutionContext of a case, and the emitter that delivers them."""

    def __init__(self, store: Store, org: tuple[str, str, str], org_host: str) -> None:
        self.store = store
        self.org = org  # (organization id, unique name, business unit id)
        self.org_host = org_host
        self.emitter = WebhookEmitter()
        self._lock = threading.Lock()
        self._hooks: list[Webhook] = []

    def register(
        self, url: str, key: str | None, header: tuple[str, str] | None, verify: bool | str
    ) -> str:
        """Add a step; returns its id."""
        hook = Webhook(str(uuid.uuid4()), url, key, header, verify)
        with self._lock:
            self._hooks.append(hook)
        return hook.step_id

    def body(self, case_id: str, step_id: str | None = None) -> tuple[dict[str, str], bytes]:
        """Headers and body of the Create event of ``case_id`` as stored now."""
        with self.store.lock:
            rec = dict(self.store.tables["incidents"][case_id.lower()])
        with self._lock:
            step = step_id or (self._hooks[0].step_id if self._hooks else str(uuid.uuid4()))
        schema = self.store.schemas["incidents"]
        context = build_context(
            schema, rec, user_id=rec["_createdby_value"], org=self.org, step_id=step
        )
        return encode_body(context, self.org_host)

    def announce(self, case_ids: list[str], bypass_steps: set[str] | None = None) -> None:
        """Queue the Create event of each case for every step not bypassed."""
        with self._lock:
            hooks = [h for h in self._hooks if h.step_id not in (bypass_steps or set())]
        for case_id in case_ids:
            for hook in hooks:
                headers, body = self.body(case_id, hook.step_id)
                self.emitter.submit(hook, Delivery(case_id, hook.step_id, headers, body))

    def announce_request(self, case_ids: list[str], headers: Mapping[str, str]) -> None:
        """``announce`` for cases created by a request with these (lower-cased) headers."""
        if not case_ids:
            return
        bypass = headers.get("mscrm.bypassbusinesslogicexecution", "")
        if "customasync" in bypass.replace(" ", "").lower().split(","):
            return
        steps = headers.get("mscrm.bypassbusinesslogicexecutionstepids", "")
        self.announce(case_ids, {s.strip().lower() for s in steps.split(",") if s.strip()})
