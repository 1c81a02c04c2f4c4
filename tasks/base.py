"""The one base class of every operation task: the reliability rules, written once.

A task module declares only the domain call:

    @app.task(base=OperationTask, name="tasks.email.deliver_notification")
    def deliver_notification(session, operation, notification_id): ...

and the base class does the rest for each delivery: claim the operation (skipped if it is
terminal, cancelled or running elsewhere), mark it running, call the domain in one
transaction with recording the result, and on failure either record it (a domain error
or a permanent provider refusal), schedule a retry with exponential backoff and jitter
through the outbox, or — after the last attempt — mark it dead and alert the admins.
The operation's request id is put into every log line on the way.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery import Task
from prometheus_client import Counter, Histogram
from sqlalchemy.orm import joinedload

from domain.core.errors import DomainError, PermanentFault, TransientFault
from domain.core.logging import request_id_var
from domain.operations import alerts
from domain.operations import service as operations
from domain.operations.models import Operation
from tasks.runtime import Runtime, runtime

logger = logging.getLogger(__name__)

TASKS = Counter("deepref_tasks_total", "Task deliveries by outcome", ["queue", "task", "state"])
DURATION = Histogram(
    "deepref_task_duration_seconds",
    "Time spent running a task's domain call",
    ["queue", "task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


class OperationTask(Task):  # type: ignore[misc]  # Celery's Task is untyped
    """Runs the operation named by `operation_id`; subclasses are made by `@app.task(base=…)`."""

    # Task kwargs are the outbox payload (ids), not the domain function's parameters.
    typing = False

    @property
    def queue(self) -> str:
        return str(self.name).split(".")[1]

    def __call__(self, operation_id: str, **ids: Any) -> None:
        message_id = self.request.id
        message = uuid.UUID(message_id) if message_id else None
        run_operation(runtime(), self, uuid.UUID(operation_id), ids, message)


def run_operation(
    rt: Runtime, task: OperationTask, operation_id: uuid.UUID, ids: dict[str, Any], message_id: uuid.UUID | None
) -> str:
    """Deliver one task message (`message_id`: its outbox row); returns the outcome that was counted."""
    settings = rt.settings
    with rt.database.transaction() as session:
        claim = operations.claim(
            session,
            operation_id,
            max_attempts=settings.task_max_attempts,
            lease_seconds=settings.task_time_limit,
            message_id=message_id,
        )
        if claim.exhausted and claim.operation is not None:
            alerts.alert_admins(session, claim.operation)
        request_id = claim.operation.request_id if claim.operation is not None else None
    if claim.operation is None or claim.exhausted:
        return _count(task, "dead" if claim.exhausted else "skipped")
    token = request_id_var.set(request_id)
    try:
        return _attempt(rt, task, operation_id, ids)
    finally:
        request_id_var.reset(token)


def _attempt(rt: Runtime, task: OperationTask, operation_id: uuid.UUID, ids: dict[str, Any]) -> str:
    started = time.perf_counter()
    try:
        _perform(rt, task, operation_id, ids)
    except (DomainError, PermanentFault) as exc:
        _record_failure(rt, operation_id, exc)
        outcome = "failed"
    except Exception as exc:  # anything else may pass: retry, then give up
        outcome = _retry_or_bury(rt, task, operation_id, exc)
    else:
        outcome = "succeeded"
    DURATION.labels(task.queue, task.name).observe(time.perf_counter() - started)
    return _count(task, outcome)


def _perform(rt: Runtime, task: OperationTask, operation_id: uuid.UUID, ids: dict[str, Any]) -> None:
    """Run the domain call and record its result in one transaction.

    A provider fault (TransientFault, PermanentFault) commits what the domain flushed before
    raising it — its record of the failed attempt — since nothing was done that needs
    undoing; any other exception rolls everything back.
    """
    with rt.database.session() as session:
        try:
            operation = _running(session, operation_id)
            result = task.run(session, operation, **ids)
            operations.succeed(session, operation, result)
        except (TransientFault, PermanentFault):
            session.commit()
            raise
        except BaseException:
            session.rollback()
            raise
        session.commit()


def _running(session: Any, operation_id: uuid.UUID) -> Operation:
    # The owner comes in the same query: its data key seals the result, and the domain call
    # usually needs the same user (found in the session then, not queried again).
    operation = session.get(
        Operation, operation_id, with_for_update={"of": Operation}, options=[joinedload(Operation.owner)]
    )
    if operation is None:  # deleted (its owner erased) between claim and run
        raise DomainError("operation disappeared")
    return operation  # type: ignore[no-any-return]


def _record_failure(rt: Runtime, operation_id: uuid.UUID, exc: Exception) -> None:
    logger.info("operation %s failed: %s", operation_id, _code(exc))
    with rt.database.transaction() as session:
        operation = session.get(Operation, operation_id, with_for_update=True)
        if operation is not None:
            operations.fail(session, operation, _code(exc), str(exc)[:500])


def _retry_or_bury(rt: Runtime, task: OperationTask, operation_id: uuid.UUID, exc: Exception) -> str:
    with rt.database.transaction() as session:
        operation = session.get(Operation, operation_id, with_for_update=True)
        if operation is None:
            return "skipped"
        if operation.attempts >= rt.settings.task_max_attempts:
            logger.error("operation %s dead after %d attempts", operation_id, operation.attempts, exc_info=exc)
            operations.mark_dead(session, operation, _code(exc), str(exc)[:500])
            alerts.alert_admins(session, operation)
            return "dead"
        delay = operations.retry_later(session, operation, _code(exc), str(exc)[:500])
        logger.warning("operation %s attempt %d failed; retry in %.1f s", operation_id, operation.attempts, delay)
        return "retried"


def _code(exc: Exception) -> str:
    """A machine-readable error code: the exception's class, never its (maybe personal) text."""
    name = type(exc).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _count(task: OperationTask, state: str) -> str:
    TASKS.labels(task.queue, task.name, state).inc()
    return state
