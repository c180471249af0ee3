"""The backfill's share of each platform's request quota, shared by every instance.

One ``SharedBudget`` per platform user (scope ``<platform>:<host>:<user>``), sized from
``ENRICH_BACKFILL__*``: ServiceNow's rate-limit rule (requests per period) and Dataverse's
service protection limits (6,000 requests and 20 minutes of execution per 5 minutes), times
``share`` so live webhooks keep the rest. The budget's rows live in Table Storage when the app
has it (every instance and the CLI then draw from the same slots) and in memory otherwise.
Each backfill connector sends its requests inside the budget's ``slot`` and reports every 429
to ``throttled``, which pauses and slows the whole run, not one worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connectors.backfill_pacing import (
    MemoryBudgetRows,
    SharedBudget,
    TableBudgetRows,
    budget_scope,
)
from domain.settings import Settings

__all__ = ["BudgetWiring"]


@dataclass
class BudgetWiring:
    """Builds the budgets on first use and hands each connector its pacing options."""

    settings: Settings
    env: Mapping[str, str]
    storage: bool
    connection: str
    now: Callable[[], float] = time.time
    budgets: dict[str, SharedBudget] = field(default_factory=dict)
    started: float = field(default=0.0)

    def options(self, system: str) -> dict[str, Any]:
        """Connector keyword arguments: the budget's slot as pacer, its throttle hook."""
        budget = self.budget(system)
        if budget is None:
            return {}
        pacer = "pacer" if system == "servicenow" else "shared_pacer"
        return {pacer: budget.slot, "on_throttle": budget.throttled}

    def budget(self, system: str) -> SharedBudget | None:
        """The budget of ``system``'s platform user (None when the platform is not set up)."""
        if system in self.budgets:
            return self.budgets[system]
        cfg = self.settings.backfill
        rows: Any = (
            TableBudgetRows.from_settings(self.env, self.connection)
            if self.storage
            else MemoryBudgetRows()
        )
        sn, dv = self.settings.servicenow, self.settings.dataverse
        if system == "servicenow" and sn is not None:
            user = sn.username or sn.client_id or ""
            scope = budget_scope(system, urlsplit(str(sn.instance_url)).netloc, user)
            budget = SharedBudget(
                rows,
                scope=scope,
                requests=cfg.servicenow_requests,
                period_s=cfg.servicenow_period_s,
                share=cfg.share,
                now=self.now,
            )
        elif system == "dataverse" and dv is not None:
            user = dv.client_id or dv.managed_identity_client_id or "managed-identity"
            scope = budget_scope(system, urlsplit(str(dv.org_url)).netloc, user)
            budget = SharedBudget(
                rows,
                scope=scope,
                requests=cfg.dataverse_requests,
                period_s=cfg.dataverse_period_s,
                share=cfg.share,
                max_execution_s=cfg.dataverse_execution_s,
                now=self.now,
            )
        else:
            return None
        if not self.started:
            self.started = self.now()
        self.budgets[system] = budget
        return budget

    def quota_used(self) -> float:
        """Requests this process was granted over what the share allowed since the first one."""
        elapsed = self.now() - self.started if self.started else 0.0
        if elapsed <= 0 or not self.budgets:
            return 0.0
        allowed = sum(b.per_slot * elapsed / b.slot_s for b in self.budgets.values())
        granted = sum(b.stats().granted for b in self.budgets.values())
        return granted / allowed if allowed > 0 else 0.0
