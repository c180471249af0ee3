"""The queue path on Azurite: webhook → Storage queue (base64, like the host) → worker → instance.

The Functions host cannot run here, so the test plays its part: what the webhook's output binding
would enqueue is sent through our StorageJobQueue (same base64 encoding as the binding), received
from Azurite and handed to the queue trigger as a QueueMessage with its dequeue count.
"""

from __future__ import annotations

import dataclasses

import azure.functions as func
import pytest

import function_app
from connectors.queue import StorageJobQueue
from tests.integration.conftest import build_slice, installed
from tests.integration.test_servicenow_slice import OUTAGE, work_notes
from tests.simulators.servicenow import RateLimitRule

pytestmark = pytest.mark.azurite


def deliver(azurite, queue_name: str) -> int:
    """Receive every visible message and run it through the queue trigger, as the host does."""
    client = azurite.queue_client(queue_name)
    ran = 0
    for message in client.receive_messages(max_messages=16, visibility_timeout=30):
        qm = func.QueueMessage(
            id=message.id,
            body=message.content.encode(),
            pop_receipt=message.pop_receipt,
        )
        function_app.enrich_worker(qm)
        client.delete_message(message)
        ran += 1
    return ran


def test_webhook_to_worker_through_azurite(sim, clock, azurite, queue_name) -> None:  # type: ignore[no-untyped-def]
    jobs = StorageJobQueue.from_connection_string(azurite.connection_string, queue_name)
    with installed(build_slice(sim, clock)) as app:
        sys_id = sim.add_record("incident", OUTAGE, user="anna.b")
        assert app.webhook(sys_id).status_code == 202
        jobs.send(app.pending.pop())  # what the output binding does with the message
        assert deliver(azurite, queue_name) == 1
    rec = sim.get_record("incident", sys_id)
    assert rec["category"] == "network"
    assert len(work_notes(app, sys_id)) == 1


def test_long_429_puts_the_job_back_on_azurite_invisible_until_the_wait(
    sim, clock, azurite, queue_name
) -> None:  # type: ignore[no-untyped-def]
    requeue = StorageJobQueue.from_connection_string(azurite.connection_string, queue_name)
    app = build_slice(sim, clock)
    app.service = dataclasses.replace(app.service, requeue=requeue)
    with installed(app):
        sys_id = sim.add_record("incident", OUTAGE, user="anna.b")
        clock.advance(3600 - (clock.now() % 3600) - 900)  # the hour's window resets in 15 min
        sim.set_rate_limit(RateLimitRule(limit=1, mode="retry_after"))
        app.webhook(sys_id)
        requeue.send(app.pending.pop())
        assert deliver(azurite, queue_name) == 1  # throttled: re-enqueued, not raised
        client = azurite.queue_client(queue_name)
        assert client.get_queue_properties().approximate_message_count == 1
        assert list(client.receive_messages(max_messages=16)) == []  # invisible for ~15 min
    assert sim.get_record("incident", sys_id)["category"] == "inquiry"  # nothing written yet
