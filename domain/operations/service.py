"""The life of an operation: enqueued with its outbox row, claimed, finished, retried, dead.

Status transitions are guarded: a terminal operation never changes again, and every
transition stages an `operation.updated` event for the owner (sent after commit).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from domain.core.db import utcnow
from domain.core.errors import Conflict, NotFound
from domain.core.logging import request_id_var
from domain.core.pagination import Page, newest_first
from domain.operations import routes
from domain.operations.dispatch import stage_event, stage_task
from domain.operations.models import TERMINAL, Operation, OperationStatus, OutboxMessage
from domain.operations.routes import TaskRoute
from domain.users.models import User

EVENT = "operation.updated"
PROBE_KIND = "system.probe"
# Retry delays: exponential from BACKOFF_BASE, capped (no ETA longer than a minute).
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0


def enqueue(
    session: Session,
    *,
    owner_id: uuid.UUID | None,
    kind: str,
    route: TaskRoute,
    payload: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> Operation:
    """Create a queued operation and the outbox row that gets its task published.

    Both are written in the caller's transaction; the task is published after it commits.
    `payload` holds ids only (it travels through the broker). `request_id` defaults to the
    id of the request (or task) being served, so the task's logs carry it too.
    """
    operation = Operation(
        id=uuid.uuid4(),
        user_id=owner_id,
        kind=kind,
        status=OperationStatus.QUEUED,
        attempts=0,
        request_id=request_id if request_id is not None else request_id_var.get(),
        created_at=utcnow(),
    )
    session.add(operation)
    _schedule(session, operation, route, payload or {}, delay=0.0)
    return operation


def _schedule(session: Session, operation: Operation, route: TaskRoute, payload: dict[str, Any], delay: float) -> None:
    now = utcnow()
    message = OutboxMessage(
        id=uuid.uuid4(),
        operation_id=operation.id,
        task_name=route.name,
        queue=route.queue,
        payload={**payload, "operation_id": str(operation.id)},
        created_at=now,
        available_at=now + timedelta(seconds=delay),
        publish_attempts=0,
    )
    session.add(message)
    stage_task(session, message)


def get_for_owner(session: Session, owner: User, operation_id: uuid.UUID) -> Operation:
    """The caller's operation; raises NotFound for anyone else's."""
    operation = session.get(Operation, operation_id)
    if operation is None or operation.user_id != owner.id:
        raise NotFound("operation not found")
    set_committed_value(operation, "owner", owner)  # its data key opens the result: no query for the owner
    return operation


def list_for_owner(
    session: Session, owner: User, *, status: OperationStatus | None, cursor: str | None, limit: int
) -> Page[Operation]:
    """The caller's operations, newest first, keyset-paginated."""
    query = select(Operation).where(Operation.user_id == owner.id)
    if status is not None:
        query = query.where(Operation.status == status)
    page = newest_first(session, query, (Operation.created_at, Operation.id), cursor=cursor, limit=limit)
    for operation in page.items:
        set_committed_value(operation, "owner", owner)
    return page


def cancel(session: Session, owner_id: uuid.UUID, operation_id: uuid.UUID) -> Operation:
    """Cancel the caller's queued operation; raises Conflict once it has started or finished."""
    operation = session.get(Operation, operation_id, with_for_update=True)
    if operation is None or operation.user_id != owner_id:
        raise NotFound("operation not found")
    if operation.status != OperationStatus.QUEUED:
        raise Conflict(f"only a queued operation can be cancelled; this one is {operation.status.value}")
    _transition(session, operation, OperationStatus.CANCELLED)
    return operation


@dataclass(frozen=True)
class Claim:
    """What `claim` decided about a delivered task."""

    operation: Operation | None
    # The delivery was one too many: the operation was marked dead instead of run.
    exhausted: bool = False


def claim(
    session: Session,
    operation_id: uuid.UUID,
    *,
    max_attempts: int,
    lease_seconds: float,
    message_id: uuid.UUID | None = None,
) -> Claim:
    """Take a delivered operation for running, or say why not.

    Marks the delivered outbox row (`message_id`, the task id) published, so beat does not
    publish it again. Returns no operation when it is unknown, terminal, cancelled or being
    run by another worker whose lease (the task time limit) has not run out. A delivery
    beyond `max_attempts` (a task that keeps killing its worker) marks the operation dead.
    """
    if message_id is not None:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, OutboxMessage.published_at.is_(None))
            .values(published_at=utcnow())
        )
    operation = session.get(Operation, operation_id, with_for_update=True)
    if operation is None or operation.status in TERMINAL:
        return Claim(None)
    now = utcnow()
    if operation.status == OperationStatus.RUNNING and _lease_alive(operation, now, lease_seconds):
        return Claim(None)
    if operation.attempts >= max_attempts:
        mark_dead(session, operation, "too_many_deliveries", f"delivered {operation.attempts + 1} times")
        return Claim(operation, exhausted=True)
    operation.attempts += 1
    operation.started_at = now
    _transition(session, operation, OperationStatus.RUNNING)
    return Claim(operation)


def _lease_alive(operation: Operation, now: datetime, lease_seconds: float) -> bool:
    return operation.started_at is not None and operation.started_at > now - timedelta(seconds=lease_seconds)


def succeed(session: Session, operation: Operation, result: dict[str, Any] | None) -> None:
    """Record the result of a running operation."""
    operation.result = result
    operation.error_code = None
    operation.error = None
    _transition(session, operation, OperationStatus.SUCCEEDED)


def fail(session: Session, operation: Operation, code: str, message: str) -> None:
    """Record a permanent failure: retrying would not help."""
    operation.error_code = code
    operation.error = {"code": code, "message": message}
    _transition(session, operation, OperationStatus.FAILED)


def retry_later(session: Session, operation: Operation, code: str, message: str) -> float:
    """Put a failed attempt back in the queue after an exponential, jittered delay; return it."""
    delay = backoff_delay(operation.attempts)
    operation.error_code = code
    operation.error = {"code": code, "message": message}
    _transition(session, operation, OperationStatus.QUEUED)
    redeliver(session, operation, delay)
    return delay


def requeue(session: Session, operation: Operation) -> None:
    """Queue a lost operation again with a new task message, now."""
    _transition(session, operation, OperationStatus.QUEUED)
    redeliver(session, operation)


def redeliver(session: Session, operation: Operation, delay: float = 0.0) -> None:
    """Write a new outbox row repeating the operation's last task message, due after `delay`."""
    last = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.operation_id == operation.id)
        .order_by(OutboxMessage.created_at.desc())
        .limit(1)
    ).first()
    if last is None:
        raise LookupError(f"operation {operation.id} has no task message to repeat")
    payload = {k: v for k, v in last.payload.items() if k != "operation_id"}
    _schedule(session, operation, TaskRoute(last.task_name, last.queue), payload, delay)


def mark_dead(session: Session, operation: Operation, code: str, message: str) -> None:
    """Give up on an operation: its payload stays in the outbox for an administrator."""
    operation.error_code = code
    operation.error = {"code": code, "message": message}
    _transition(session, operation, OperationStatus.DEAD)


def backoff_delay(attempts: int) -> float:
    """Seconds before attempt `attempts + 1`: exponential with full jitter, at most a minute."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def _transition(session: Session, operation: Operation, status: OperationStatus) -> None:
    if operation.status in TERMINAL:
        raise Conflict(f"operation is already {operation.status.value}")
    operation.status = status
    now = utcnow()
    operation.updated_at = now
    if status in TERMINAL:
        operation.finished_at = now
    if operation.user_id is not None:
        stage_event(session, operation.user_id, EVENT, event_data(operation))


def event_data(operation: Operation) -> dict[str, Any]:
    """What an `operation.updated` event carries: state only, never results (fetch those)."""
    return {
        "id": str(operation.id),
        "kind": operation.kind,
        "status": operation.status.value,
        "attempts": operation.attempts,
        "errorCode": operation.error_code,
        "updatedAt": operation.updated_at.isoformat() if operation.updated_at else None,
        "links": {"self": f"/api/v1/operations/{operation.id}"},
    }


def start_probe(session: Session, owner_id: uuid.UUID, request_id: str | None = None) -> Operation:
    """Queue a no-op operation that checks the whole pipeline: broker, `sync` worker, events."""
    return enqueue(session, owner_id=owner_id, kind=PROBE_KIND, route=routes.PROBE, request_id=request_id)


def run_probe(operation: Operation) -> dict[str, Any]:
    """What a probe does when it runs: report when and how long it waited in the queue."""
    now = utcnow()
    return {"ranAt": now.isoformat(), "queuedSeconds": round((now - operation.created_at).total_seconds(), 6)}
