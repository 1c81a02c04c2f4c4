"""Celery settings: broker, queues, routes, the reliability rules of DESIGN.md, the beat schedule.

Used by the workers, beat and Flower (`celery -A tasks …`, through tasks/app.py) and by the
ingress's publishing client, so every process agrees on queues and on the visibility timeout.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Queue

from domain.core.config import Settings

QUEUES = ("ai", "email", "sms", "audit", "sync")


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The Celery configuration for `settings` (`app.conf.update(celery_settings(settings))`)."""
    transport = {
        # One visibility timeout for broker and app; it must outlast the longest task (the
        # settings refuse a time limit that does not fit under it).
        "visibility_timeout": settings.celery_visibility_timeout,
        # Look for messages of dead workers a few times per timeout (kombu's default sweep is
        # every 100 s, which would delay redelivery far past a short timeout).
        "unacked_restore_interval": _restore_interval(settings),
        "unacked_restore_throttle": 1,
        "socket_timeout": 2,
        "socket_connect_timeout": 2,
    }
    return {
        "broker_url": settings.effective_broker_url,
        "broker_transport_options": transport,
        # PostgreSQL holds every operation's state: no result backend.
        "result_backend": None,
        "task_ignore_result": True,
        "task_queues": tuple(Queue(name, routing_key=name) for name in QUEUES),  # type: ignore[no-untyped-call]
        "task_default_queue": "sync",
        # Each task is routed to exactly one queue: the one its module is named after.
        "task_routes": {f"tasks.{name}.*": {"queue": name} for name in QUEUES} | {"beat.tasks.*": {"queue": "sync"}},
        # At-least-once delivery: acknowledge after the task ran, hand the message back when
        # the worker running it dies, and take one message at a time so a crash strands one.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": max(1, settings.task_time_limit - max(1, settings.task_time_limit // 10)),
        # Publishing fails fast when the broker is down: the outbox keeps the task, beat
        # publishes it later, and the client already has its 202.
        "task_publish_retry": False,
        "broker_connection_timeout": 2,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ("json",),
        "timezone": "UTC",
        "enable_utc": True,
        # Workers report task events (Flower); publishers do not, which would double every publish.
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": beat_schedule(settings),
        "beat_schedule_filename": str(settings.var_dir / "celerybeat-schedule"),
    }


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic maintenance; each run expires when the next is due (no pile-up while workers are down)."""
    every = {
        "beat.tasks.relay_outbox": settings.outbox_relay_seconds,
        "beat.tasks.reap_stuck_operations": settings.reaper_seconds,
        "beat.tasks.restore_unacked_messages": float(_restore_interval(settings)),
        "beat.tasks.prune_expired_records": 3600.0,
        "beat.tasks.anchor_audit_trail": settings.audit_anchor_seconds,
        # On the `audit` queue: appends facts whose wake-up was lost.
        "tasks.audit.drain": settings.audit_drain_seconds,
        "beat.tasks.sweep_references": settings.reference_sweep_seconds,
        "beat.tasks.expire_jobs": settings.reference_sweep_seconds,
    }
    return {
        name.rsplit(".", 1)[1]: {"task": name, "schedule": seconds, "options": {"expires": seconds}}
        for name, seconds in every.items()
    }


def _restore_interval(settings: Settings) -> int:
    """Seconds between sweeps for the messages of dead workers: a few per visibility timeout."""
    return max(1, min(60, settings.celery_visibility_timeout // 4))
