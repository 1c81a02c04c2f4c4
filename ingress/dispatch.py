"""The ingress's publishing client: sends outbox tasks to the broker, never runs them."""

from __future__ import annotations

from celery import Celery

from celeryconfig import celery_settings
from domain.core.config import Settings
from domain.operations.dispatch import OutgoingTask, TaskSender


def celery_sender(settings: Settings) -> TaskSender:
    """A sender over a Celery client configured like the workers (celeryconfig.py)."""
    client = Celery("deepref-ingress", set_as_current=False)
    client.conf.update(celery_settings(settings))

    def send(task: OutgoingTask) -> None:
        client.send_task(
            task.name, kwargs=task.kwargs, task_id=str(task.id), queue=task.queue, eta=task.eta, retry=False
        )

    return send
