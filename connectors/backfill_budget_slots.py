"""The shared budget row's arithmetic: a fresh row, opening a slot, recording a throttle; scopes.

Pure functions of one budget row (a dict, as stored in ``enrichbudget``) and the scope helpers;
``connectors.backfill_pacing.SharedBudget`` reads, changes and conditionally writes the row with
them (the semantics are in that module's docstring), which re-exports the public names here.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

__all__ = ["CUT", "MIN_FACTOR", "RECOVER_STEP", "Row", "budget_scope", "scope_key"]

CUT = 0.5  # the factor is multiplied by this on a throttle...
MIN_FACTOR = 0.05  # ...but never below this
RECOVER_STEP = 0.05  # given back per clean slot
_SCOPE_CHARS = 200
_UNSAFE = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")

Row = dict[str, Any]


def scope_key(scope: str) -> str:
    """``scope`` as a valid, injective PartitionKey (see ``connectors.backfill_pacing``)."""
    safe = _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", scope)
    if len(safe) <= _SCOPE_CHARS:
        return safe
    digest = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:16]
    return f"{safe[: _SCOPE_CHARS - 17]}~{digest}"


def budget_scope(platform: str, host: str, user: str) -> str:
    """The scope of one platform user: ``<platform>:<host, lower case>:<user>``.

    Not yet a PartitionKey: ``SharedBudget`` passes it through ``scope_key`` (its ``.scope``).
    """
    return f"{platform}:{host.strip().lower()}:{user.strip()}"


def new_row() -> Row:
    """A scope's row before its first slot: factor 1, nothing used, no pause."""
    return {
        "slot": -1.0,
        "cap": 0,
        "used": 0,
        "carry": 0.0,
        "factor": 1.0,
        "factor_slot": -1.0,
        "paused_until": 0.0,
        "throttles": 0,
        "cuts": 0,
        "exec_s": 0.0,
        "exec_cap": 0.0,
    }


def open_slot(row: Row, k: int, per_slot: float, exec_per_slot: float | None) -> bool:
    """Move ``row`` to slot ``k`` if it is older: recover the factor, set cap and carry.

    ``per_slot`` is the allowance at factor 1, ``exec_per_slot`` the execution seconds (or None).
    Changes ``row`` in place; whether it opened a slot.
    """
    if float(row["slot"]) >= k:
        return False
    factor = float(row["factor"])
    if factor < 1.0 and k > float(row["factor_slot"]):
        factor = min(1.0, factor + RECOVER_STEP * (k - float(row["factor_slot"])))
    if factor >= 1.0 or k > float(row["factor_slot"]):
        row["factor_slot"] = float(k)
    available = float(row["carry"]) + per_slot * factor
    cap = math.floor(available + 1e-9)
    row.update(slot=float(k), factor=factor, cap=cap, used=0, carry=max(0.0, available - cap))
    if exec_per_slot is not None:
        debt = max(0.0, float(row["exec_s"]) - float(row["exec_cap"]))
        row.update(exec_s=debt, exec_cap=exec_per_slot * factor)
    return True


def throttle_row(row: Row, now: float, until: float, slot_s: float) -> Row:
    """A copy of ``row`` paused until ``until``: the first report of a pause cuts the factor and
    closes the current slot, later ones while it runs only extend it."""
    row = dict(row)
    running = now < float(row["paused_until"])
    row["paused_until"] = max(float(row["paused_until"]), until)
    row["throttles"] = int(row["throttles"]) + 1
    if not running:
        row["factor"] = max(MIN_FACTOR, float(row["factor"]) * CUT)
        row["cuts"] = int(row["cuts"]) + 1
        row["cap"] = min(int(row["cap"]), int(row["used"]))  # close this slot
    pause_slot = float(math.floor(float(row["paused_until"]) / slot_s))
    row["factor_slot"] = max(float(row["factor_slot"]), pause_slot)
    return row
