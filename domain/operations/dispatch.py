"""After a commit: publish the transaction's tasks to the broker and its events to Redis.

Domain services only *stage* work on the session (`stage_task`, `stage_event`); nothing
leaves the process before the transaction that justifies it has committed, and a
rollback discards it. Each process installs one `Dispatcher` on its database with the
sender it has (a Celery client in the ingress, the Celery app in workers).

A task that cannot be published (broker down, process killed right after the commit)
stays in the outbox unmarked; beat publishes it later (`relay_outbox`). Publishing twice
is harmless: tasks are idempotent and keyed by the outbox id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from domain.core.db import Database, utcnow
from domain.core.events import EventPublisher
from domain.core.redis import OutageBackoff
from domain.operations.models import OutboxMessage

logger = logging.getLogger(__name__)

STAGED_TASKS = "deepref.staged_tasks"
STAGED_EVENTS = "deepref.staged_events"


@dataclass(frozen=True)
class OutgoingTask:
    """A task message as the broker gets it: `id` (the outbox id) is the Celery task id."""

    id: uuid.UUID
    name: str
    queue: str
    kwargs: dict[str, Any]
    eta: datetime | None = None

    @classmethod
    def of(cls, message: OutboxMessage) -> OutgoingTask:
        eta = message.available_at if message.available_at > utcnow() else None
        return cls(message.id, message.task_name, message.queue, dict(message.payload), eta)


# Sends one task to the broker; raises if the broker did not take it.
TaskSender = Callable[[OutgoingTask], None]


def stage_task(session: Session, message: OutboxMessage) -> None:
    """Publish `message` once the session's transaction commits."""
    session.info.setdefault(STAGED_TASKS, []).append(OutgoingTask.of(message))


def stage_event(session: Session, user_id: uuid.UUID, name: str, data: dict[str, Any]) -> None:
    """Send event `name` to the user's clients once the session's transaction commits."""
    session.info.setdefault(STAGED_EVENTS, []).append((user_id, name, data))


class Dispatcher:
    """Publishes what committed transactions staged; one per process and database.

    A published task is not marked in the outbox here: that would cost every request a
    second write. The worker marks it when it claims the operation, and beat publishes
    again only rows still unmarked after `OUTBOX_GRACE_SECONDS`.
    """

    def __init__(self, database: Database, sender: TaskSender, events: EventPublisher | None) -> None:
        self.database = database
        self.sender = sender
        self.events = events
        # After a broker failure, leave new tasks to beat for a moment instead of making
        # every request wait for another failed connection attempt.
        self.broker_outage = OutageBackoff(seconds=5.0)

    def install(self) -> Dispatcher:
        for factory in self.database.factories:
            event.listen(factory, "after_commit", self._after_commit)
            event.listen(factory, "after_rollback", _discard)
        return self

    def _after_commit(self, session: Session) -> None:
        tasks: list[OutgoingTask] = session.info.pop(STAGED_TASKS, [])
        events: list[tuple[uuid.UUID, str, dict[str, Any]]] = session.info.pop(STAGED_EVENTS, [])
        # Events first: once a task is out, its worker may publish a later state, which must
        # not reach the client before the state this transaction committed.
        if self.events is not None:
            for user_id, name, data in events:
                self.events.publish(user_id, name, data)
        if tasks:
            self.publish(tasks)

    def publish(self, tasks: list[OutgoingTask]) -> int:
        """Send `tasks` to the broker; return how many it took.

        Stops at the first failure: the broker is most likely down, and beat retries the rest.
        """
        for sent, task in enumerate(tasks):
            if self.broker_outage.active:
                return sent
            try:
                self.sender(task)
            except Exception:  # any broker fault: the outbox keeps the task
                logger.warning("task %s (%s) not published; the outbox keeps it", task.id, task.name, exc_info=True)
                self.broker_outage.failed()
                return sent
        return len(tasks)


def _discard(session: Session) -> None:
    session.info.pop(STAGED_TASKS, None)
    session.info.pop(STAGED_EVENTS, None)
