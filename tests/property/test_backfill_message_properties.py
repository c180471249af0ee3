"""Backfill window messages: whatever arrives on the backfill queue, the worker never raises;
anything that is not a window of a known run ends as exactly one poison message that fits the
queue and carries the sha256 of what was received, and nothing is re-queued."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from connectors.backfill_state import MemoryCheckpointStore
from connectors.queue import InMemoryJobQueue
from tests.property.job_strategies import arbitrary_messages
from triage.backfill.run import BackfillWorker

_window_like = st.fixed_dictionaries(
    {"run_id": st.text(max_size=80), "window": st.integers(-5, 2_000_000)},
    optional={"requeues": st.integers(-3, 20_000) | st.text(max_size=5), "x": st.none()},
).map(lambda d: json.dumps(d).encode())


@given(arbitrary_messages | _window_like | st.binary(max_size=3000))
def test_any_backfill_message_is_handled_without_raising(raw: bytes) -> None:
    store = MemoryCheckpointStore()
    queue, poison = InMemoryJobQueue(), InMemoryJobQueue()
    worker = BackfillWorker(store, lambda system: None, queue, poison)
    assert worker.process(raw) is None  # no such run here: nothing is carried out
    assert queue.sent == []
    [(message, _)] = poison.sent
    envelope = json.loads(message)
    assert envelope["sha256"] == hashlib.sha256(raw).hexdigest()
    assert envelope["size"] == len(raw)
    assert len(envelope["reason"]) <= 400
