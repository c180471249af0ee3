"""connectors.queue: StorageJobQueue against a real Azurite, settings resolution, InMemoryJobQueue."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.queue import TextBase64EncodePolicy

from connectors.queue import (
    DEV_STORAGE_CONNECTION_STRING,
    MAX_MESSAGE_CHARS,
    InMemoryJobQueue,
    JobQueue,
    StorageJobQueue,
    resolve_connection_string,
)
from domain.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    RejectedError,
    UnavailableError,
)
from tests.azurite import DEV_ACCOUNT_KEY, Azurite, connection_string

JOB = json.dumps(
    {"system": "servicenow", "table": "incident", "sys_id": "abc123", "note": "café ✓"}
)
# The largest text whose base64 form fits a 64 KiB queue message.
MAX_TEXT_BYTES = MAX_MESSAGE_CHARS // 4 * 3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unreachable_queue(name: str = "jobs") -> StorageJobQueue:
    endpoint = f"http://127.0.0.1:{_closed_port()}/devstoreaccount1"
    conn = connection_string(endpoint, endpoint, endpoint)
    return StorageJobQueue.from_connection_string(
        conn, name, connect_timeout_s=0.5, read_timeout_s=0.5, retry_total=0
    )


def _receive_all(client: Any) -> list[str]:
    return [m.content for m in client.receive_messages(max_messages=32, visibility_timeout=30)]


@pytest.mark.azurite
class TestStorageJobQueue:
    def test_send_is_received_as_the_same_text_and_stored_as_base64(self, azurite, queue_name):
        StorageJobQueue.from_connection_string(azurite.connection_string, queue_name).send(JOB)

        raw = azurite.queue_client(queue_name, base64=False).peek_messages(max_messages=5)
        assert [m.content for m in raw] == [base64.b64encode(JOB.encode("utf-8")).decode("ascii")]
        assert _receive_all(azurite.queue_client(queue_name)) == [JOB]

    def test_creates_the_missing_queue_once_under_concurrent_first_sends(self, azurite, queue_name):
        with pytest.raises(ResourceNotFoundError):
            azurite.queue_client(queue_name).get_queue_properties()
        counting = _CountingClient(
            azurite.queue_client(queue_name, message_encode_policy=TextBase64EncodePolicy())
        )
        jobs = StorageJobQueue(counting)
        start = threading.Barrier(8)

        def send(i: int) -> None:
            start.wait(timeout=5)
            jobs.send(f"job-{i}")

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert counting.creates == 1
        assert sorted(_receive_all(azurite.queue_client(queue_name))) == [
            f"job-{i}" for i in range(8)
        ]

    def test_send_to_an_existing_queue_from_a_new_instance(self, azurite, queue_name):
        azurite.queue_client(queue_name).create_queue()
        StorageJobQueue.from_connection_string(azurite.connection_string, queue_name).send(JOB)
        assert _receive_all(azurite.queue_client(queue_name)) == [JOB]

    def test_delayed_message_is_invisible_until_the_delay_rounded_up_has_passed(
        self, azurite, queue_name
    ):
        jobs = StorageJobQueue.from_connection_string(azurite.connection_string, queue_name)
        reader = azurite.queue_client(queue_name)
        sent_at = time.monotonic()
        jobs.send(JOB, delay_s=0.3)  # rounds up to 1 s; truncating would make it visible now

        assert reader.peek_messages() == []
        seen: list[str] = []
        while not seen and time.monotonic() - sent_at < 3.0:
            time.sleep(0.1)  # the one real wait: Storage visibility has 1 s granularity
            seen = [m.content for m in reader.peek_messages()]
        assert seen == [JOB]
        assert time.monotonic() - sent_at >= 0.9

    def test_negative_delay_means_visible_now(self, azurite, queue_name):
        StorageJobQueue.from_connection_string(azurite.connection_string, queue_name).send(
            JOB, delay_s=-5
        )
        assert [m.content for m in azurite.queue_client(queue_name).peek_messages()] == [JOB]

    @pytest.mark.parametrize("delay_s", [30 * 24 * 3600, float("inf")])
    def test_delay_beyond_the_storage_cap_is_clamped_not_rejected(
        self, azurite, queue_name, delay_s
    ):
        raw = azurite.queue_client(queue_name, base64=False)
        raw.create_queue()
        # Storage itself refuses anything over 7 days, so the clamp is what makes this pass.
        with pytest.raises(HttpResponseError, match="OutOfRangeQueryParameterValue"):
            raw.send_message("x", visibility_timeout=7 * 24 * 3600 + 1)

        StorageJobQueue.from_connection_string(azurite.connection_string, queue_name).send(
            JOB, delay_s=delay_s
        )
        assert raw.get_queue_properties().approximate_message_count == 1
        assert raw.peek_messages() == []

    def test_largest_message_fits_and_one_byte_more_is_rejected_before_sending(
        self, azurite, queue_name
    ):
        jobs = StorageJobQueue.from_connection_string(azurite.connection_string, queue_name)
        jobs.send("a" * MAX_TEXT_BYTES)
        assert _receive_all(azurite.queue_client(queue_name)) == ["a" * MAX_TEXT_BYTES]

        with pytest.raises(RejectedError, match="base64") as info:
            jobs.send("a" * (MAX_TEXT_BYTES + 1))
        assert info.value.system == "storage"

    def test_queue_deleted_under_us_is_not_found_then_recreated(self, azurite, queue_name):
        jobs = StorageJobQueue.from_connection_string(azurite.connection_string, queue_name)
        jobs.send("first")
        azurite.queue_client(queue_name).delete_queue()

        with pytest.raises(NotFoundError) as info:
            jobs.send("lost")
        assert info.value.status_code == 404
        assert info.value.request_id  # Storage's x-ms-request-id is carried for support
        jobs.send("second")
        assert _receive_all(azurite.queue_client(queue_name)) == ["second"]

    def test_wrong_account_key_is_an_auth_error(self, azurite: Azurite, queue_name):
        wrong_key = base64.b64encode(b"not the key" * 6).decode("ascii")
        assert wrong_key != DEV_ACCOUNT_KEY
        endpoint = azurite.queue_endpoint
        conn = connection_string(endpoint, endpoint, endpoint, key=wrong_key)
        jobs = StorageJobQueue.from_connection_string(conn, queue_name, retry_total=0)

        with pytest.raises(AuthError) as info:
            jobs.send(JOB)
        assert info.value.status_code == 403
        assert wrong_key not in str(info.value)

    def test_invalid_queue_name_is_rejected(self, azurite):
        jobs = StorageJobQueue.from_connection_string(azurite.connection_string, "Bad_Name")
        with pytest.raises(RejectedError, match="InvalidResourceName") as info:
            jobs.send(JOB)
        assert info.value.status_code == 400
        assert str(info.value).startswith("[storage, HTTP 400")

    def test_from_settings_takes_a_full_connection_string_as_is(self, azurite, queue_name):
        env = {"JobsStorage": azurite.connection_string}
        StorageJobQueue.from_settings(env, "JobsStorage", queue_name).send(JOB)
        assert _receive_all(azurite.queue_client(queue_name)) == [JOB]


class _CountingClient:
    """A QueueClient that counts create_queue calls (dependency passed in, nothing patched)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.creates = 0
        self._lock = threading.Lock()

    def create_queue(self, **kwargs: Any) -> None:
        with self._lock:
            self.creates += 1
        self._inner.create_queue(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_unreachable_endpoint_is_unavailable_quickly_and_leaks_no_key():
    jobs = _unreachable_queue()
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        jobs.send(JOB)
    assert time.monotonic() - started < 3.0
    assert info.value.system == "storage"
    assert info.value.status_code is None
    assert DEV_ACCOUNT_KEY not in str(info.value)
    assert "ServiceRequestError" in str(info.value)


def test_nan_delay_is_refused_before_any_network():
    with pytest.raises(ValueError, match="NaN"):
        _unreachable_queue().send(JOB, delay_s=float("nan"))


def test_oversized_message_is_refused_before_any_network():
    with pytest.raises(RejectedError):
        _unreachable_queue().send("a" * (MAX_TEXT_BYTES + 1))


class TestResolveConnectionString:
    def test_missing_setting_names_the_setting(self):
        with pytest.raises(ConfigError, match="AzureWebJobsStorage"):
            resolve_connection_string({}, "AzureWebJobsStorage")

    def test_blank_setting_is_missing(self):
        with pytest.raises(ConfigError, match="JobsStorage is missing"):
            resolve_connection_string({"JobsStorage": "  "}, "JobsStorage")

    @pytest.mark.parametrize(
        "value",
        [
            "UseDevelopmentStorage=true",
            "usedevelopmentstorage=TRUE;",
            " UseDevelopmentStorage = true ",
        ],
    )
    def test_development_storage_means_azurite_on_its_default_ports(self, value):
        resolved = resolve_connection_string({"AzureWebJobsStorage": value}, "AzureWebJobsStorage")
        assert resolved == DEV_STORAGE_CONNECTION_STRING
        assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;" in resolved
        assert f"AccountKey={DEV_ACCOUNT_KEY};" in resolved

    def test_development_storage_proxy_is_refused(self):
        value = "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://127.0.0.1"
        with pytest.raises(ConfigError, match="DevelopmentStorageProxyUri"):
            resolve_connection_string({"S": value}, "S")

    def test_full_connection_string_is_returned_as_is(self):
        conn = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=x"
        assert resolve_connection_string({"S": conn}, "S") == conn

    @pytest.mark.parametrize("suffix", ["__queueServiceUri", "__serviceUri", "__accountName"])
    def test_identity_based_connection_is_not_a_connection_string(self, suffix):
        # StorageJobQueue.from_settings and LazyTable.from_settings take it (storage_auth);
        # only a caller that needs a connection string is told it has none.
        env = {f"AzureWebJobsStorage{suffix}": "acct"}
        if suffix != "__accountName":
            env = {f"AzureWebJobsStorage{suffix}": "https://acct.queue.core.windows.net"}
        with pytest.raises(ConfigError, match="identity-based") as info:
            resolve_connection_string(env, "AzureWebJobsStorage")
        assert "AzureWebJobsStorage" in str(info.value)

    def test_value_that_is_not_a_connection_string_is_not_echoed(self):
        with pytest.raises(ConfigError) as info:
            resolve_connection_string({"S": "s3cr3t-looking-value"}, "S")
        assert "s3cr3t" not in str(info.value)

    def test_from_settings_refuses_a_missing_setting(self):
        with pytest.raises(ConfigError, match="JobsStorage"):
            StorageJobQueue.from_settings({"Other": "x=y"}, "JobsStorage", "jobs")

    def test_from_settings_resolves_development_storage(self):
        jobs = StorageJobQueue.from_settings(
            {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "AzureWebJobsStorage", "jobs"
        )
        assert jobs.queue_name == "jobs"


class TestInMemoryJobQueue:
    def test_records_messages_and_requested_delays_in_order(self):
        queue = InMemoryJobQueue()
        jobs: JobQueue = queue  # mypy checks that it satisfies the protocol
        jobs.send("a")
        jobs.send("b", delay_s=120)
        jobs.send("c", delay_s=0.5)
        assert queue.sent == [("a", 0.0), ("b", 120.0), ("c", 0.5)]
        assert queue.messages == ["a", "b", "c"]

    def test_error_makes_send_raise_and_record_nothing(self):
        queue = InMemoryJobQueue()
        queue.error = UnavailableError("down", system="storage")
        with pytest.raises(UnavailableError):
            queue.send("a")
        assert queue.sent == []

    def test_applies_the_production_checks(self):
        queue = InMemoryJobQueue()
        with pytest.raises(RejectedError):
            queue.send("a" * (MAX_TEXT_BYTES + 1))
        with pytest.raises(ValueError, match="NaN"):
            queue.send("a", delay_s=float("nan"))
        queue.send("a" * MAX_TEXT_BYTES)
        assert len(queue.sent) == 1


def test_the_queue_sdk_is_imported_only_when_a_message_is_sent():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from connectors.queue import DEV_STORAGE_CONNECTION_STRING, StorageJobQueue\n"
        "q = StorageJobQueue.from_connection_string(DEV_STORAGE_CONNECTION_STRING, 'jobs')\n"
        "print(q.queue_name, 'azure.storage.queue' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["jobs", "False"]  # the worker's cold start does not pay for the SDK
