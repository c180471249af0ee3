"""The health report behind ``GET /api/health``: pure over the probes passed in.

Each probe answers one check (``configuration``, ``mapping``, ``model``, ``token``,
``platform``, ``queues``) as a ``Check``. The checker runs them in parallel, each bounded by
``timeout_s`` (a probe still running then is reported failing and left behind), turns any
exception into a short reason naming its type and HTTP status (never its text), and caches
the report for ``ttl_s`` seconds so the endpoint cannot be used to hammer the platforms:
concurrent callers wait for the one evaluation in progress.

Overall status: ``failing`` when a critical check fails (configuration, mapping, token,
platform, queues), ``degraded`` when any check is not ok, else ``ok``. HTTP 200 for ok and
degraded, 503 for failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from domain.errors import ConnectorError

__all__ = [
    "CHECKS",
    "CRITICAL",
    "Check",
    "HealthChecker",
    "HealthReport",
    "Probe",
    "Status",
    "short_reason",
]

Status = Literal["ok", "degraded", "failing"]
CHECKS = ("configuration", "mapping", "model", "token", "platform", "queues")
CRITICAL = frozenset({"configuration", "mapping", "token", "platform", "queues"})
_RANK: dict[Status, int] = {"ok": 0, "degraded": 1, "failing": 2}


@dataclass(frozen=True)
class Check:
    """One check's verdict and JSON-safe details (identifiers, counts, short reasons)."""

    status: Status
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """``{"status": ..., **detail}``."""
        return {"status": self.status, **self.detail}


Probe = Callable[[], Check]


@dataclass(frozen=True)
class HealthReport:
    """The overall status and each check."""

    status: Status
    checks: Mapping[str, Check]

    @property
    def http_status(self) -> int:
        """200 when ok or degraded, 503 when failing."""
        return 503 if self.status == "failing" else 200

    def as_json(self) -> dict[str, Any]:
        """``{"status", "checks": {name: {"status", ...}}}``."""
        return {"status": self.status, "checks": {k: c.as_json() for k, c in self.checks.items()}}


def short_reason(exc: BaseException) -> str:
    """The error's type and HTTP status: never its message (it may quote a platform)."""
    status = exc.status_code if isinstance(exc, ConnectorError) else None
    return type(exc).__name__ + (f" (HTTP {status})" if status is not None else "")


def overall(checks: Mapping[str, Check]) -> Status:
    """failing if a critical check fails; degraded if any check is not ok; else ok."""
    if any(c.status == "failing" and name in CRITICAL for name, c in checks.items()):
        return "failing"
    return "degraded" if any(c.status != "ok" for c in checks.values()) else "ok"


class HealthChecker:
    """Evaluates the probes (a fresh set per evaluation) and caches the report briefly."""

    def __init__(
        self,
        probes: Callable[[], Mapping[str, Probe]],
        *,
        timeout_s: float = 5.0,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = probes
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, HealthReport] | None = None

    def report(self) -> HealthReport:
        """The cached report if younger than ``ttl_s``, else a new evaluation."""
        with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            report = self._evaluate()
            self._cached = (self._clock(), report)
            return report

    def _evaluate(self) -> HealthReport:
        try:
            probes = dict(self._probes())
        except Exception as exc:  # the probes could not even be built
            failed = Check("failing", {"reason": short_reason(exc)})
            return HealthReport("failing", {"configuration": failed})
        results: dict[str, Check] = {}
        threads = {
            name: threading.Thread(
                target=_run, args=(probe, name, results), name=f"health-{name}", daemon=True
            )
            for name, probe in probes.items()
        }
        deadline = time.monotonic() + self.timeout_s
        for thread in threads.values():
            thread.start()
        for thread in threads.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        checks: dict[str, Check] = {}
        for name in probes:
            found = results.get(name)
            if found is None:
                found = Check("failing", {"reason": f"timed out after {self.timeout_s:g} s"})
            checks[name] = found
        return HealthReport(overall(checks), checks)


def _run(probe: Probe, name: str, results: dict[str, Check]) -> None:
    try:
        results[name] = probe()
    except Exception as exc:
        results[name] = Check("failing", {"reason": short_reason(exc)})
