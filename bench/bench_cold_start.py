"""Cold start: a fresh process imports function_app, builds the worker and enriches one ticket.

Measured from outside (process spawn to exit), median of several runs, so interpreter start-up
counts as it does on a cold Functions worker. Prints one JSON object.

    python -m bench.bench_cold_start [--runs 7] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import time
t0 = time.perf_counter()
import function_app
t1 = time.perf_counter()
service = function_app.services.get()
t2 = time.perf_counter()
from enrichers.engine import run_enrichers
from domain.models import Ticket
ticket = Ticket(description="Hej, VPN virker ikke i butik 12, ingen kan logge ind. Mvh Anna")
chosen = run_enrichers(service.pipeline.enrichers, ticket)
t3 = time.perf_counter()
assert "summary" in chosen, chosen
import json, sys
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "enrich_s": t3 - t2,
                  "sklearn_loaded": "sklearn" in sys.modules}))
"""


def _env(model: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "ENRICH_SERVICENOW__INSTANCE_URL": "https://bench.invalid",
            "ENRICH_SERVICENOW__AUTH": "basic",
            "ENRICH_SERVICENOW__USERNAME": "bench",
            "ENRICH_SERVICENOW__PASSWORD": "bench",
            "ENRICH_WEBHOOK__SECRET": "bench",
        }
    )
    if model:
        env["ENRICH_MODEL_PATH"] = model
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--model", help="model directory to load (default: rules only)")
    args = parser.parse_args()
    walls, inner = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=_env(args.model),
            capture_output=True,
            text=True,
            check=True,
        )
        walls.append(time.perf_counter() - start)
        inner.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        json.dumps(
            {
                "bench": "cold_start",
                "model": bool(args.model),
                "runs": args.runs,
                "wall_s_median": round(statistics.median(walls), 3),
                "wall_s_runs": [round(w, 3) for w in walls],
                "import_s_median": round(statistics.median(i["import_s"] for i in inner), 3),
                "build_s_median": round(statistics.median(i["build_s"] for i in inner), 3),
                "enrich_s_median": round(statistics.median(i["enrich_s"] for i in inner), 4),
                "sklearn_loaded": any(i["sklearn_loaded"] for i in inner),
            }
        )
    )


if __name__ == "__main__":
    main()
