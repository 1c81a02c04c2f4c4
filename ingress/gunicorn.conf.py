"""gunicorn settings for the ingress (gevent workers).

No `preload_app`: psycopg must be imported after gevent has patched the worker, or
every query blocks the whole worker. Keep-alive outlasts clients' think time.
"""

import multiprocessing
import os

bind = f"127.0.0.1:{os.environ.get('INGRESS_PORT', '8000')}"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", str(max(2, multiprocessing.cpu_count()))))
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
keepalive = 5
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
