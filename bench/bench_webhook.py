"""Webhook handling latency in-process: p50/p99 of function_app.servicenow_webhook.

Runs the real handler (HMAC check, validation, job serialisation) with an in-memory queue, so
the figure is our code's cost per call, not the network's. Prints one JSON object.

    python -m bench.bench_webhook [--calls 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import azure.functions as func

import function_app
from connectors.queue import InMemoryJobQueue
from domain.mapping import load_mapping
from domain.settings import Settings, WebhookSettings
from enrichers import default_enrichers
from triage.inbound import sign
from triage.pipeline import Pipeline
from triage.service import Service

SECRET = "bench-secret"  # noqa: S105 - a throwaway key for an in-process benchmark


class _Out:
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, value: str) -> None:
        self.value = value

    def get(self) -> str | None:
        return self.value


class _NoConnector:
    system = "servicenow"


def _request(sys_id: str) -> func.HttpRequest:
    body = json.dumps({"sys_id": sys_id, "table": "incident", "number": "INC0010001"}).encode()
    t = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "X-Triage-Timestamp": str(t),
        "X-Triage-Signature": sign(body, SECRET.encode(), t),
    }
    return func.HttpRequest(
        method="POST", url="/api/servicenow/webhook", headers=headers, body=body
    )


def run(calls: int) -> list[float]:
    """Latencies in milliseconds of ``calls`` handler invocations."""
    requests = [_request(uuid.uuid4().hex) for _ in range(calls)]
    timings = []
    for req in requests:
        out = _Out()
        start = time.perf_counter()
        resp = function_app.servicenow_webhook(req, out)
        timings.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 202, resp.get_body()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    mapping = load_mapping()
    pipeline = Pipeline(_NoConnector(), mapping, default_enrichers(mapping))  # type: ignore[arg-type]
    settings = Settings(webhook=WebhookSettings(secret=SECRET))
    queue = InMemoryJobQueue()
    function_app.services.override(Service(settings, pipeline, queue, InMemoryJobQueue()))
    run(200)  # warm-up
    p50s, p99s = [], []
    for _ in range(args.repeats):
        timings = sorted(run(args.calls))
        p50s.append(statistics.median(timings))
        p99s.append(timings[int(len(timings) * 0.99) - 1])
    print(
        json.dumps(
            {
                "bench": "webhook_in_process",
                "calls_per_run": args.calls,
                "runs": args.repeats,
                "p50_ms_median": round(statistics.median(p50s), 4),
                "p99_ms_median": round(statistics.median(p99s), 4),
                "p50_ms_runs": [round(x, 4) for x in p50s],
                "p99_ms_runs": [round(x, 4) for x in p99s],
            }
        )
    )


if __name__ == "__main__":
    main()
