"""Pacer: sliding-window request count, execution-time budget and a concurrency cap."""

from __future__ import annotations

import threading
import time

import pytest

from connectors._pacing import Pacer
from tests.connectors.conftest import FakeClock


def test_requests_over_the_window_wait_until_the_oldest_leaves(clock: FakeClock):
    pacer = Pacer(max_requests=3, window_s=300.0, sleep=clock.sleep, monotonic=clock.monotonic)
    for _ in range(3):
        with pacer.slot():
            clock.t += 10.0
    assert clock.waits == []
    with pacer.slot():  # the 4th within 300 s: waits until the 1st (t=0) is 300 s old
        pass
    assert clock.waits == [pytest.approx(270.0)]
    assert clock.t == pytest.approx(clock.waits[0] + 30.0 + 1_700_000_000.0)


def test_the_window_slides_rather_than_resetting(clock: FakeClock):
    pacer = Pacer(max_requests=2, window_s=100.0, sleep=clock.sleep, monotonic=clock.monotonic)
    with pacer.slot():
        pass
    clock.t += 60.0
    with pacer.slot():
        pass
    with pacer.slot():  # only the first leaves at +100: wait 40, not 100
        pass
    assert clock.waits == [pytest.approx(40.0)]


def test_execution_time_budget_pauses_new_requests(clock: FakeClock):
    pacer = Pacer(
        max_requests=100,
        max_execution_s=50.0,
        window_s=300.0,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    with pacer.slot():
        clock.t += 50.0  # one slow request spends the whole budget, finishing at +50
    with pacer.slot():
        pass
    assert clock.waits == [pytest.approx(300.0)]


def test_concurrency_is_capped():
    pacer = Pacer(max_concurrent=2)
    inside = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal inside, peak
        with pacer.slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2


def test_a_failing_request_still_frees_its_slot(clock: FakeClock):
    pacer = Pacer(max_concurrent=1, sleep=clock.sleep, monotonic=clock.monotonic)
    with pytest.raises(RuntimeError), pacer.slot():
        raise RuntimeError("boom")
    with pacer.slot():  # would block forever if the slot leaked
        pass


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Pacer(max_requests=0)
