"""The fair connection queue: a returned connection goes to the longest waiter."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy.util import queue

from domain.core.pool import FairQueue


def _wait_for_waiters(pool_queue: FairQueue, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(pool_queue._waiters) < count:
        assert time.monotonic() < deadline, "waiters did not register"
        time.sleep(0.001)


def test_a_returned_item_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    pool_queue = FairQueue(maxsize=1)
    got: list[tuple[str, str]] = []

    def wait(name: str) -> None:
        got.append((name, pool_queue.get(timeout=5)))

    first = threading.Thread(target=wait, args=("first",))
    first.start()
    _wait_for_waiters(pool_queue, 1)
    second = threading.Thread(target=wait, args=("second",))
    second.start()
    _wait_for_waiters(pool_queue, 2)

    pool_queue.put("connection-a", False)
    with pytest.raises(queue.Empty):  # a newcomer does not jump the queue
        pool_queue.get(block=False)
    first.join(5)
    pool_queue.put("connection-b", False)
    second.join(5)
    assert got == [("first", "connection-a"), ("second", "connection-b")]
    assert pool_queue.qsize() == 0


def test_without_waiters_it_is_a_plain_bounded_queue() -> None:
    pool_queue = FairQueue(maxsize=1)
    pool_queue.put("connection", False)
    with pytest.raises(queue.Full):
        pool_queue.put("another", False)
    assert pool_queue.get(block=False) == "connection"
    with pytest.raises(queue.Empty):
        pool_queue.get(timeout=0.01)
    assert not pool_queue._waiters  # the timed-out waiter left the line
