"""Queue-message invariants, through Service.process_job and function_app.enrich_worker.

A malformed message never raises and yields exactly one poison message, which fits the queue
(InMemoryJobQueue applies the production size check) and carries the sha256 and size of what
was received; a valid job in any spelling runs and poisons nothing.
"""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

import function_app
from connectors.queue import MAX_MESSAGE_CHARS
from domain.errors import InboundError
from tests.property import (
    assert_logs_are_bounded,
    captured_logs,
    installed,
    make_service,
    queue_message,
    valid_job,
)
from tests.property.job_strategies import (
    arbitrary_messages,
    large_texts,
    malformed_job_messages,
    valid_job_messages,
)
from triage.jobs import EnrichJob
from triage.service import Service


def run_both(raw: bytes) -> list[Service]:
    """Process ``raw`` through the Service and through the worker trigger; never raises."""
    direct, hosted = make_service(), make_service()
    with captured_logs() as records:
        direct.process_job(raw)
        with installed(hosted):
            function_app.enrich_worker(queue_message(raw))
    assert_logs_are_bounded(records)
    return [direct, hosted]


def assert_poisoned_once(service: Service, raw: bytes) -> None:
    [(message, _delay)] = service.poison.sent
    assert len(message) * 4 / 3 < MAX_MESSAGE_CHARS * 0.75  # well under the limit
    envelope = json.loads(message)
    assert envelope["sha256"] == hashlib.sha256(raw).hexdigest()
    assert envelope["size"] == len(raw)
    assert envelope["reason"].startswith("malformed_job: ")
    assert service.pipeline.connector.records[valid_job()["record_id"]]["category"] == ""


@given(arbitrary_messages)
def test_arbitrary_bytes_are_poisoned_once(raw):
    for service in run_both(raw):
        assert_poisoned_once(service, raw)


@given(st.text(max_size=600) | large_texts)
def test_arbitrary_text_is_poisoned_once(text):
    service = make_service()
    with captured_logs() as records:
        assert service.process_job(text) is None
    assert_logs_are_bounded(records)
    assert_poisoned_once(service, text.encode())


@given(malformed_job_messages())
def test_malformed_jobs_are_poisoned_not_run(raw):
    for service in run_both(raw):
        assert_poisoned_once(service, raw)


@given(valid_job_messages())
def test_valid_jobs_in_any_spelling_run(raw):
    for service in run_both(raw):
        assert service.poison.sent == []
        assert service.pipeline.connector.records[valid_job()["record_id"]]["category"] == "network"


@given(valid_job_messages(), st.data())
def test_mutated_jobs_run_or_are_poisoned_never_both_never_raise(raw, data):
    # Random edits: the outcome depends on whether the edit kept the job valid.
    position = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 3))
    raw = raw[:position] + data.draw(st.binary(max_size=4)) + raw[position + cut :]
    try:
        EnrichJob.from_message(raw)
        valid = True
    except InboundError:
        valid = False
    for service in run_both(raw):
        if valid:
            assert service.poison.sent == []
        else:
            assert_poisoned_once(service, raw)
