"""The fault matrix at scale: every fault family against the loopback ServiceNow simulator.

Runs ``tests/integration/fault_matrix.py`` (the same harness the tests assert on) with more
tickets per scenario and prints one JSON object: per scenario the tickets, lost tickets,
duplicate notes, overwritten human values, poisoned jobs, restored conflicts, invocations and
raised invocations, plus the wall time. Nothing leaves 127.0.0.1.

    python -m bench.bench_fault_matrix [--tickets 200] [--scenario NAME ...] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from tests.integration.fault_matrix import CLIENT, INTEGRATION_USER, SCENARIOS, run_scenario
from tests.simulators import FakeClock
from tests.simulators.servicenow import ServiceNowSimulator


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen scenarios and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=200)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the faults make every layer warn; figures only
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for scenario in args.scenario or SCENARIOS:
        clock = FakeClock(start=1_800_000_000.0)
        sim = ServiceNowSimulator(
            users={"anna.b": "pw"},
            oauth_clients={CLIENT[0]: (CLIENT[1], INTEGRATION_USER)},
            clock=clock,
        )
        t0 = time.perf_counter()
        with sim:
            outcome = run_scenario(scenario, sim, clock, tickets=args.tickets, seed=args.seed)
        results[scenario] = {**outcome.as_dict(), "seconds": round(time.perf_counter() - t0, 2)}
        results[scenario]["simulator_errors"] = len(sim.errors)
    keys = ("lost", "duplicate_notes", "overwritten_human_values", "poisoned")
    totals = {k: sum(r[k] for r in results.values()) for k in ("tickets", *keys)}
    report = {
        "tickets_per_scenario": args.tickets,
        "seed": args.seed,
        "totals": totals,
        "scenarios": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
