"""Process-level settings for serving the relay with gunicorn (used by realtime/gunicorn.conf.py).

Kept out of the config file so it is ordinary, tested code.
"""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from types import FrameType

import gevent  # type: ignore[import-untyped]

SignalHandler = Callable[[int, FrameType | None], None]


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one: every stream is a socket. Returns the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. an unlimited hard limit, which the kernel caps lower
            return soft
    return hard


def end_streams_on_sigterm(then: SignalHandler) -> None:
    """On SIGTERM, end this worker's open streams, then stop as the server would have.

    gunicorn's graceful stop waits for in-flight requests, and a stream never finishes
    by itself; without this every stop would last the whole graceful timeout.
    """
    from realtime.app import shutdown

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt the hub mid-iteration: do the work in a greenlet.
        gevent.spawn(shutdown)
        then(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
