"""gunicorn settings for the ingress (gevent workers).

No `preload_app`: psycopg must be imported after gevent has patched the worker, or
every query blocks the whole worker.

Keep-alive outlasts the idle timeout of the usual proxies and clients (60 s): the side
that closes an idle connection should be the client's, or a request sent just as the
server closes it is lost ("connection closed"); with 5 s, `make load` lost a few POSTs of
users who had paused a little longer. On SIGTERM, idle connections end at once
(ingress/worker.py), requests being served finish within graceful_timeout.
"""

import multiprocessing
import os

bind = f"127.0.0.1:{os.environ.get('INGRESS_PORT', '8000')}"
worker_class = "ingress.worker.GeventWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, multiprocessing.cpu_count()))))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
keepalive = 65
timeout = 30
graceful_timeout = 30
preload_app = False
accesslog = None  # the app writes structured access logs itself
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
control_socket_disable = True  # several gunicorns (ingress, relay, benchmarks) share a host
forwarded_allow_ips = os.environ.get("TRUSTED_PROXIES", "127.0.0.1")


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """Drop a dead worker's Prometheus samples so /metrics stays accurate."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
