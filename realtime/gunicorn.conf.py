"""gunicorn settings for the SSE relay (gevent, one worker).

One worker: the relay holds one Redis subscription per process and streams are idle
most of the time, so a single gevent worker carries thousands of them (RELAY_WORKERS
raises it). No `preload_app`, so psycopg is imported after gevent patched the worker.
No keep-alive: a stream occupies its connection until it ends.
"""

import os

from domain.core.config import Settings
from realtime.server import end_streams_on_sigterm, raise_open_file_limit

_max_streams = int(os.environ.get("RELAY_MAX_CONNECTIONS") or Settings.model_fields["relay_max_connections"].default)

bind = f"127.0.0.1:{os.environ.get('RELAY_PORT', '8001')}"
worker_class = "gevent"
workers = int(os.environ.get("RELAY_WORKERS", "1"))
# Room beyond the stream limit, so the connections over it still get their 503 (and /healthz works).
worker_connections = _max_streams + max(100, _max_streams // 10)
keepalive = 0
timeout = 30
graceful_timeout = 10
preload_app = False
accesslog = None  # the relay logs stream opens and closes itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
control_socket_disable = True  # several gunicorns (ingress, relay, benchmarks) share a host


def on_starting(server):  # type: ignore[no-untyped-def]
    """Thousands of streams need thousands of file descriptors; workers inherit the limit."""
    raise_open_file_limit()


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    end_streams_on_sigterm(worker.handle_exit)


def worker_int(worker):  # type: ignore[no-untyped-def]
    """SIGINT/SIGQUIT: end the streams too, before the worker exits."""
    from realtime.app import shutdown

    shutdown()
