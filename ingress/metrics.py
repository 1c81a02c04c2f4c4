"""Prometheus metrics of the ingress (multi-process aware under gunicorn)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from celeryconfig import QUEUES

logger = logging.getLogger(__name__)

# Kombu's Redis transport keeps a queue's messages in one list per priority step.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

REQUESTS = Counter("deepref_http_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "deepref_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RATE_LIMITER_DEGRADED = Counter(
    "deepref_rate_limiter_unavailable_total", "Requests let through because the rate limiter could not reach Redis"
)


class QueueDepth:
    """`deepref_queue_length{queue}`: messages waiting in each Celery queue, read from the broker at scrape time."""

    def __init__(self, broker: redis.Redis) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("deepref_queue_length", "Messages waiting in each Celery queue", labels=["queue"])
        try:
            with self.broker.pipeline(transaction=False) as pipe:
                for queue in QUEUES:
                    for suffix in PRIORITY_SUFFIXES:
                        pipe.llen(queue + suffix)
                lengths = pipe.execute()
        except redis.RedisError as exc:
            logger.warning("queue lengths unavailable", extra={"error": str(exc)})
            return
        steps = len(PRIORITY_SUFFIXES)
        for index, queue in enumerate(QUEUES):
            gauge.add_metric([queue], sum(lengths[index * steps : (index + 1) * steps]))
        yield gauge


def render(broker: redis.Redis | None = None) -> tuple[bytes, str]:
    """The exposition text, with the queue lengths when `broker` is given.

    Aggregates every process (ingress and worker) when PROMETHEUS_MULTIPROC_DIR is set.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    if broker is not None:
        queues = CollectorRegistry()
        queues.register(QueueDepth(broker))
        text += generate_latest(queues)
    return text, CONTENT_TYPE_LATEST
