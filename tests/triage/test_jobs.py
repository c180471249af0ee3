import hashlib
import json

import pytest

from connectors.queue import MAX_MESSAGE_CHARS, InMemoryJobQueue
from domain.errors import InboundError
from triage.jobs import MAX_POISON_CHARS, EnrichJob, poison_message

SYS_ID = "abcdef0123456789abcdef0123456789"


def fields(**overrides):
    return {"table": "incident", "record_id": SYS_ID, "received_at": 1_800_000_000.25, **overrides}


def test_round_trip_and_integral_received_at():
    job = EnrichJob(**fields(requeues=3))
    assert EnrichJob.from_message(job.to_message()) == job
    assert EnrichJob.from_message(job.to_message().encode()) == job
    assert EnrichJob.from_message(json.dumps(fields(received_at=1_800_000_000))).received_at == (
        1_800_000_000.0
    )


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (json.dumps(fields(version=True)), "version"),
        (json.dumps(fields(version=1.0)), "version"),
        (json.dumps(fields(requeues=True)), "requeues"),
        (json.dumps(fields(requeues=1.0)), "requeues"),
        (json.dumps(fields(requeues="1")), "requeues"),
        (json.dumps(fields(received_at="1")), "received_at"),
        (json.dumps(fields(received_at=True)), "received_at"),
        (json.dumps(fields(received_at=0)).replace(": 0", ": 1e999"), "too large"),
        (json.dumps(fields(received_at=0)).replace(": 0", ": NaN"), "NaN"),
        (json.dumps(fields(received_at=0)).replace(": 0", ": " + "9" * 4300), "longer than"),
        ("[" * 2000 + "]" * 2000, "nested too deeply"),
        (b"\xff\xfe" + json.dumps(fields()).encode("utf-16-le"), "not UTF-8"),
        ("[]", "JSON object"),
    ],
)
def test_every_parse_failure_is_malformed_job(raw, match):
    with pytest.raises(InboundError, match=match) as info:
        EnrichJob.from_message(raw)
    assert info.value.code == "malformed_job"
    assert len(str(info.value)) <= 300


def test_error_names_unknown_keys_without_echoing_them_whole():
    key = "K" * 5000
    with pytest.raises(InboundError, match="Extra inputs") as info:
        EnrichJob.from_message(json.dumps(fields(**{key: 1})))
    assert len(str(info.value)) <= 300
    assert "K" * 41 not in str(info.value)


def test_poison_envelope_keeps_a_small_message_whole():
    raw = b'{"not": "a job"}'
    envelope = json.loads(poison_message(raw, "malformed_job: bad"))
    assert envelope == {
        "reason": "malformed_job: bad",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size": len(raw),
        "message": raw.decode(),
    }


@pytest.mark.parametrize(
    "raw",
    [b"\xff" * 60_000, b"\x01" * 60_000, "😀" * 20_000, "x" * 200_000, b"a" * 49 * 1024],
)
def test_poison_envelope_of_a_huge_message_fits_the_queue(raw):
    text = poison_message(raw, "r" * 10_000)
    queue = InMemoryJobQueue()
    queue.send(text)  # the production size check
    data = raw if isinstance(raw, bytes) else raw.encode()
    envelope = json.loads(text)
    assert len(text) <= MAX_POISON_CHARS < MAX_MESSAGE_CHARS * 3 // 4
    assert envelope["sha256"] == hashlib.sha256(data).hexdigest()
    assert envelope["size"] == len(data)
    assert len(envelope["reason"]) <= 301
    _kept, marker, tail = envelope["message"].rpartition("…[truncated ")
    assert marker and 0 < int(tail.removesuffix(" bytes]")) < len(data)


def test_poison_envelope_never_splits_a_utf8_character():
    raw = ("é" * 40_000).encode()  # two bytes each; the cut falls inside one or between two
    message = json.loads(poison_message(raw, "x"))["message"]
    kept, _, tail = message.partition("…[truncated ")
    assert set(kept) == {"é"}
    assert tail == f"{len(raw) - 2 * len(kept)} bytes]"


def test_truncation_marker_counts_the_bytes_left_out():
    raw = "x" * 100_000
    message = json.loads(poison_message(raw, "x"))["message"]
    kept, _, tail = message.partition("…[truncated ")
    assert len(kept) > 1000 and tail == f"{100_000 - len(kept)} bytes]"


def test_a_dataverse_job_carries_a_guid_and_each_system_only_its_own_ids():
    guid = "5f6b1c1e-7a2b-4c8d-9e0f-1a2b3c4d5e6f"
    job = EnrichJob(system="dataverse", table="incidents", record_id=guid, received_at=1.0)
    assert EnrichJob.from_message(job.to_message()) == job
    for system, record_id in (("dataverse", "a" * 32), ("servicenow", guid)):
        raw = json.dumps(
            {"system": system, "table": "incident", "record_id": record_id, "received_at": 1.0}
        )
        with pytest.raises(InboundError, match="record id"):
            EnrichJob.from_message(raw)
