"""gunicorn's gevent worker, whose idle keep-alive connections end as soon as it is told to stop.

Keep-alive is long (ingress/gunicorn.conf.py): clients and proxies, not the server, should
close idle connections. gunicorn's own worker, told to stop, lets a connection waiting for
its next request wait out the keep-alive, past graceful_timeout, where it is killed. This one
ends those waits at once, while requests being served still finish; the worker then exits as
soon as the last of them is answered. Nothing but gevent and gunicorn is imported here: the
master loads this module too, before any worker has patched the standard library.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import gevent  # type: ignore[import-untyped]
from gunicorn.workers import ggevent  # type: ignore[import-untyped]

# Seconds between looks at whether the worker has been told to stop.
STOP_POLL_SECONDS = 0.2


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Connections waiting for their next request: the greenlet serving each, and its wait.
        self.idle: dict[Any, gevent.Timeout] = {}

    def timeout_ctx(self) -> IdleWait:
        """gunicorn waits for each next request on a connection inside this."""
        return IdleWait(self, self.cfg.keepalive)

    def run(self) -> None:
        gevent.spawn(self.end_idle_waits_on_stop)
        super().run()

    def end_idle_waits_on_stop(self) -> None:
        while self.alive:
            gevent.sleep(STOP_POLL_SECONDS)
        loop = gevent.get_hub().loop
        for greenlet, wait in list(self.idle.items()):
            loop.run_callback(self.end_wait, greenlet, wait)

    def end_wait(self, greenlet: Any, wait: gevent.Timeout) -> None:
        """End `greenlet`'s wait as its keep-alive running out would, if it is still that wait."""
        if self.idle.get(greenlet) is wait:  # not serving a request meanwhile
            greenlet.throw(wait)


class IdleWait:
    """A keep-alive wait (gevent.Timeout that ends silently) that the worker can end early."""

    def __init__(self, worker: GeventWorker, seconds: float) -> None:
        self.worker = worker
        self.timeout = gevent.Timeout(seconds, False)

    def __enter__(self) -> gevent.Timeout:
        self.timeout.start()
        self.worker.idle[gevent.getcurrent()] = self.timeout
        return self.timeout

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        self.worker.idle.pop(gevent.getcurrent(), None)
        return bool(self.timeout.__exit__(kind, value, traceback))
