"""A small model of the Azure Functions host around real ``Service`` objects, for fault matrices.

Platform-neutral: the Storage queue as the host sees it (visibility delays, dequeue counts),
the poison queue, and ``Host.run``, which delivers ``batchSize`` messages per instance per round
to the instances' ``Service.process_job`` on a thread pool, puts a message whose invocation
raised back after ``visibilityTimeout`` and moves it to the poison queue after
``maxDequeueCount`` failures (as the host does). Each platform's world (simulator, services,
tickets, counting) subclasses ``Host``: ``tests/integration/fault_matrix.py`` (ServiceNow) and
``tests/integration/fault_matrix_dataverse.py`` (Dataverse).

Fake time and real time: the host advances a fake clock (retry waits, visibility delays), while
a simulator's late commits take real time. A redelivery 30 fake seconds later runs at once, so it
can re-read before an in-flight commit lands (the race claims must survive); only before a jump
of more than ``LATE_COMMIT_BOUND_S`` does the host call ``settle`` (wait for in-flight writes),
so a late commit stands for one that lands within that bound, inside the claim's settle time.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

from tests.simulators import FakeClock
from triage.service import Service

__all__ = [
    "BATCH",
    "LATE_COMMIT_BOUND_S",
    "MAX_DEQUEUE",
    "VISIBILITY_S",
    "Host",
    "HostQueue",
    "Message",
    "Outcome",
    "PoisonQueue",
    "record_of",
]

VISIBILITY_S = 30.0  # host.json visibilityTimeout: the delay before a failed job is retried
MAX_DEQUEUE = 5  # host.json maxDequeueCount
BATCH = 4  # host.json batchSize
# The fake seconds a real-time late commit stands for: the host lets fake time run ahead of an
# in-flight write (a redelivery after 30 s may re-read before it lands) but not past this bound,
# which is inside the claim's settle time.
LATE_COMMIT_BOUND_S = 45.0


@dataclass
class Message:
    """One queue message: its bytes, when it becomes visible, how often it was dequeued."""

    body: bytes
    visible_at: float
    dequeue_count: int = 0


class HostQueue:
    """The Storage queue as the host sees it; also the JobQueue our services re-enqueue to."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    def send(self, message: str, *, delay_s: float = 0) -> None:
        """Enqueue ``message``, visible after ``delay_s`` fake seconds."""
        with self.lock:
            self.messages.append(Message(message.encode(), self.clock.now() + delay_s))

    def take(self, limit: int) -> list[Message]:
        """Dequeue up to ``limit`` visible messages, oldest first."""
        with self.lock:
            now = self.clock.now()
            ready = [m for m in self.messages if m.visible_at <= now][:limit]
            for m in ready:
                self.messages.remove(m)
            return ready

    def put_back(self, message: Message, visible_at: float) -> None:
        """Return a dequeued message (its invocation raised), visible again at ``visible_at``."""
        message.visible_at = visible_at
        with self.lock:
            self.messages.append(message)

    def next_visible(self) -> float | None:
        """When the next message becomes visible, or None when the queue is empty."""
        with self.lock:
            return min((m.visible_at for m in self.messages), default=None)


class PoisonQueue:
    """The ``-poison`` queue: what the host or our services moved there."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.lock = threading.Lock()

    def send(self, message: str, *, delay_s: float = 0) -> None:
        """Keep ``message`` (the delay is irrelevant: nobody reads the poison queue here)."""
        with self.lock:
            self.messages.append(message)


@dataclass
class Outcome:
    """What a fault matrix counts for one scenario."""

    scenario: str
    tickets: int
    lost: int = 0
    duplicate_notes: int = 0
    overwritten_human_values: int = 0
    poisoned: int = 0
    conflicts_restored: int = 0  # ServiceNow: races repaired; Dataverse: 412s re-decided
    invocations: int = 0
    raised: int = 0
    throttled: int = 0
    failed_writes: int = 0  # writes answered 5xx or dropped
    notes: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-platform figures

    def as_dict(self) -> dict[str, Any]:
        """The figures, as a bench prints them."""
        out = dict(self.__dict__)
        out.pop("notes")
        out.update(out.pop("extra"))
        return out


class Host:
    """The host's delivery loop over ``services`` (set by the subclass), with a fake clock."""

    def __init__(self, clock: FakeClock, *, seed: int = 0) -> None:
        self.clock = clock
        self.random = random.Random(seed)
        self.queue = HostQueue(clock)
        self.poison = PoisonQueue()
        self.services: list[Service] = []
        self.raised = 0
        self.invocations = 0
        self._lock = threading.Lock()

    def settle(self) -> None:
        """Hook: wait for the simulator's in-flight (late) writes before a long time jump."""

    def run(self, inject: Callable[[Self, int], None] | None = None, max_rounds: int = 400) -> None:
        """Deliver until the queue is empty; ``inject(host, round)`` runs before each round."""
        if not self.services:
            raise ValueError("the host has no service instances")
        width = BATCH * len(self.services)
        with ThreadPoolExecutor(width) as pool:
            for rounds in range(max_rounds):
                if inject is not None:
                    inject(self, rounds)
                batch = self.queue.take(width)
                if not batch:
                    upcoming = self.queue.next_visible()
                    if upcoming is None:
                        return
                    jump = max(0.0, upcoming - self.clock.now()) + 0.001
                    if jump > LATE_COMMIT_BOUND_S:
                        self.settle()  # late commits land before time jumps past them
                    self.clock.advance(jump)
                    continue
                jobs = [(self.services[i % len(self.services)], m) for i, m in enumerate(batch)]
                list(pool.map(lambda job: self._invoke(*job), jobs))
            raise AssertionError(f"queue not drained after {max_rounds} rounds")

    def _invoke(self, service: Service, message: Message) -> None:
        message.dequeue_count += 1
        with self._lock:
            self.invocations += 1
        try:
            service.process_job(message.body, dequeue_count=message.dequeue_count)
        except Exception:
            with self._lock:
                self.raised += 1
            if message.dequeue_count >= MAX_DEQUEUE:
                self.poison.send(message.body.decode())  # the host moves it to -poison as is
                return
            self.queue.put_back(message, self.clock.now() + VISIBILITY_S)

    def poisoned_records(self) -> set[str]:
        """Record ids of the jobs in the poison queue (ours in an envelope, or raw)."""
        with self.poison.lock:
            return {record_of(m) for m in self.poison.messages}


def record_of(message: str) -> str:
    """The record id of a job message or of our poison envelope around one."""
    try:
        data = json.loads(message)
        if "message" in data:  # our poison envelope
            data = json.loads(data["message"])
        return str(data.get("record_id", ""))
    except (ValueError, AttributeError):
        return hashlib.sha256(message.encode()).hexdigest()
