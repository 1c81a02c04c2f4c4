"""Where the ingress runs CPU-heavy C calls (bcrypt): off the gevent loop, when there is one.

Under gunicorn's gevent workers every request of a process shares one thread; a bcrypt
hash (about 250 ms at 12 rounds) there would stall them all, long enough for a database
connection being opened meanwhile to time out. bcrypt releases the GIL, so gevent's
thread pool runs it beside the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cpu_offload() -> Callable[[Callable[[], Any]], Any] | None:
    """gevent's thread pool `apply` when this process runs under gevent (patched sockets), else None."""
    from gevent import get_hub, monkey  # type: ignore[import-untyped]

    if not monkey.is_module_patched("socket"):
        return None
    return get_hub().threadpool.apply  # type: ignore[no-any-return]
