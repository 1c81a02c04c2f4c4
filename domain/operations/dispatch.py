"""After a commit: publish the transaction's tasks to the broker and its events to Redis.

Domain services only *stage* work on the session (`stage_task`, `stage_wakeup`,
`stage_event`); nothing leaves the process before the transaction that justifies it has
committed, and a rollback discards it. Each process installs one `Dispatcher` on its
database with the sender it has (a Celery client in the ingress, the Celery app in workers).

A task that cannot be published (broker down, process killed right after the commit)
stays in the outbox unmarked; beat publishes it later (`relay_outbox`). Publishing twice
is harmless: tasks are idempotent and keyed by the outbox id.

A wake-up is different: an argument-less task that works through rows the transaction
left behind (the audit trail's pending facts), with no operation and no outbox row. Each
transaction sends at most one per task, and while one is queued — a Redis key with a
short expiry, cleared by the task as it starts — no other transaction sends another.
A lost wake-up is harmless too: beat runs the same task every few seconds.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from domain.core.db import Database, utcnow
from domain.core.events import EventPublisher
from domain.core.redis import OutageBackoff
from domain.operations.models import OutboxMessage
from domain.operations.routes import TaskRoute

logger = logging.getLogger(__name__)

STAGED_TASKS = "deepref.staged_tasks"
STAGED_EVENTS = "deepref.staged_events"
STAGED_WAKEUPS = "deepref.staged_wakeups"
# Seconds a queued wake-up holds back the others: a lost one delays none for longer.
WAKEUP_DEBOUNCE_SECONDS = 30
# A wake-up is due this long after the commit that sends it: the transactions committing
# meanwhile send none and their work joins its batch (one task per batch, not per commit).
WAKEUP_DELAY_SECONDS = 0.25


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


def stage_wakeup(session: Session, route: TaskRoute) -> None:
    """Send the argument-less task `route` once the session's transaction commits.

    Sent once however often the transaction stages it, and not at all while an earlier
    wake-up for it is still queued (see `clear_wakeup`).
    """
    session.info.setdefault(STAGED_WAKEUPS, {})[route.name] = route


def wakeup_key(route: TaskRoute) -> str:
    """The Redis key saying a wake-up is queued: `tasks.audit.drain` → `deepref:audit:drain-queued`."""
    return "deepref:" + route.name.removeprefix("tasks.").replace(".", ":") + "-queued"


def clear_wakeup(client: redis.Redis, route: TaskRoute) -> None:
    """Say the queued wake-up for `route` is being served, so the next commit that stages one sends it.

    The task calls this before it reads any work: what commits later asks for a new wake-up.
    """
    try:
        client.delete(wakeup_key(route))
    except redis.RedisError:  # the key expires by itself; beat runs the task meanwhile
        logger.warning("wake-up key of %s not cleared: Redis unavailable", route.name)


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
        # Where queued wake-ups are remembered; without Redis, every staged wake-up is sent.
        self.redis = events.client if events is not None else None
        self.redis_outage = OutageBackoff(seconds=2.0)

    def install(self) -> Dispatcher:
        for factory in self.database.factories:
            event.listen(factory, "after_commit", self._after_commit)
            event.listen(factory, "after_rollback", _discard)
        return self

    def _after_commit(self, session: Session) -> None:
        tasks: list[OutgoingTask] = session.info.pop(STAGED_TASKS, [])
        events: list[tuple[uuid.UUID, str, dict[str, Any]]] = session.info.pop(STAGED_EVENTS, [])
        wakeups: dict[str, TaskRoute] = session.info.pop(STAGED_WAKEUPS, {})
        # Events first: once a task is out, its worker may publish a later state, which must
        # not reach the client before the state this transaction committed.
        if self.events is not None:
            for user_id, name, data in events:
                self.events.publish(user_id, name, data)
        if wakeups:
            tasks = tasks + self._wakeups_to_send(wakeups.values())
        if tasks:
            self.publish(tasks)

    def _wakeups_to_send(self, routes: Iterable[TaskRoute]) -> list[OutgoingTask]:
        if self.broker_outage.active:  # it would not be sent: leave the key free, beat runs the task
            return []
        due = utcnow() + timedelta(seconds=WAKEUP_DELAY_SECONDS)
        return [
            OutgoingTask(uuid.uuid4(), route.name, route.queue, {}, eta=due) for route in routes if self._first(route)
        ]

    def _first(self, route: TaskRoute) -> bool:
        """Mark a wake-up for `route` queued; False if one already is (True when Redis cannot tell)."""
        if self.redis is None or self.redis_outage.active:
            return True
        try:
            return bool(self.redis.set(wakeup_key(route), 1, nx=True, ex=WAKEUP_DEBOUNCE_SECONDS))
        except redis.RedisError:  # better a wake-up too many than a fact left waiting for beat
            logger.warning("wake-up key of %s not set: Redis unavailable", route.name)
            self.redis_outage.failed()
            return True

    def publish(self, tasks: list[OutgoingTask]) -> int:
        """Send `tasks` to the broker; return how many it took.

        Stops at the first failure: the broker is most likely down, and beat retries the rest
        (outbox rows through `relay_outbox`, wake-ups by running their task on a schedule).
        """
        for sent, task in enumerate(tasks):
            if self.broker_outage.active:
                return sent
            try:
                self.sender(task)
            except Exception:  # any broker fault: the outbox (or beat's schedule) keeps the task
                logger.warning("task %s (%s) not published; beat sends it later", task.id, task.name, exc_info=True)
                self.broker_outage.failed()
                return sent
        return len(tasks)


def _discard(session: Session) -> None:
    session.info.pop(STAGED_TASKS, None)
    session.info.pop(STAGED_EVENTS, None)
    session.info.pop(STAGED_WAKEUPS, None)
