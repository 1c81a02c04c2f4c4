"""A connection pool that serves waiting requests first come, first served.

SQLAlchemy's QueuePool wakes a waiter when a connection comes back, but any request
arriving meanwhile may take that connection first. Under sustained load (a gevent
worker with far more requests in flight than pooled connections) an unlucky request can
lose that race again and again until its checkout times out, while later ones pass it.
Here a returned connection is handed straight to the longest waiter, so a checkout waits
for the requests ahead of it and no longer.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.pool import QueuePool
from sqlalchemy.util import queue


@dataclass
class _Waiter:
    ready: threading.Event = field(default_factory=threading.Event)
    item: Any = None


class FairQueue(queue.Queue[Any]):
    """A pool queue whose `put` hands the item to the oldest blocked `get`, if there is one."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: deque[_Waiter] = deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:  # re-entrant: held across the plain put, so no waiter slips in between
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.item = item
                waiter.ready.set()
                return
            super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self.mutex:
            if not self._waiters and not self._empty():
                return self._get()
            if not block:
                raise queue.Empty
            waiter = _Waiter()
            self._waiters.append(waiter)
        waiter.ready.wait(timeout)
        with self.mutex:
            # Handed over just as the wait timed out: it is ours all the same.
            if waiter.ready.is_set():
                return waiter.item
            self._waiters.remove(waiter)
        raise queue.Empty


class FairQueuePool(QueuePool):
    """QueuePool over a FairQueue: checkouts are served in the order they started waiting."""

    _queue_class = FairQueue
