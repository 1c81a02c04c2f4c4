"""What beat runs for operations: the outbox relay, the reaper and pruning."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from domain.core.db import Database, utcnow
from domain.operations import alerts
from domain.operations import service as operations
from domain.operations.dispatch import OutgoingTask, TaskSender
from domain.operations.models import Operation, OperationStatus, OutboxMessage

logger = logging.getLogger(__name__)

BATCH_SIZE = 100
# Published rows are kept this long (those of dead operations forever: their payload).
OUTBOX_RETENTION = timedelta(days=7)


def relay_outbox(database: Database, sender: TaskSender, *, grace_seconds: float) -> int:
    """Publish outbox rows no worker has claimed `grace_seconds` after they were due; return how many.

    Such a row was never published (broker down, writer killed after its commit) or its
    message was lost; at worst it is delivered twice, which tasks tolerate. Rows are taken
    with FOR UPDATE SKIP LOCKED, in batches, and marked published, so each is sent again at
    most once. Stops at the first broker failure (the rows stay for the next run).
    """
    published = 0
    while True:
        with database.transaction() as session:
            rows = list(
                session.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.published_at.is_(None),
                        OutboxMessage.available_at <= utcnow() - timedelta(seconds=grace_seconds),
                    )
                    .order_by(OutboxMessage.available_at)
                    .limit(BATCH_SIZE)
                    .with_for_update(skip_locked=True)
                )
            )
            sent = _send_rows(sender, rows)
            published += sent
        if sent < BATCH_SIZE:
            return published


def _send_rows(sender: TaskSender, rows: list[OutboxMessage]) -> int:
    sent = 0
    for row in rows:
        row.publish_attempts += 1
        try:
            sender(OutgoingTask.of(row))
        except Exception:  # broker still down: keep the rest for the next run
            logger.warning("outbox relay: broker refused task %s; will retry", row.id, exc_info=True)
            return sent
        row.published_at = utcnow()
        sent += 1
    return sent


@dataclass(frozen=True)
class Reaped:
    redelivered: int
    dead: int


def reap_stuck(session: Session, *, max_attempts: int, lost_after_seconds: float) -> Reaped:
    """Rescue operations whose task message was lost; return what was done.

    A running operation whose worker died is redelivered by the broker (visibility
    timeout), so only operations stuck longer than `lost_after_seconds` (beyond that
    timeout) are considered lost: running ones, and queued ones whose task was published
    that long ago. Each gets a new task message, or is marked dead (admins alerted) when it
    has used all its attempts.
    """
    cutoff = utcnow() - timedelta(seconds=lost_after_seconds)
    published_long_ago = select(OutboxMessage.operation_id).where(OutboxMessage.published_at < cutoff).scalar_subquery()
    stuck = session.scalars(
        select(Operation)
        .where(
            ((Operation.status == OperationStatus.RUNNING) & (Operation.started_at < cutoff))
            | (
                (Operation.status == OperationStatus.QUEUED)
                & (Operation.updated_at < cutoff)
                & Operation.id.in_(published_long_ago)
            )
        )
        .limit(BATCH_SIZE)
        .with_for_update(skip_locked=True)
    )
    redelivered = dead = 0
    for operation in stuck:
        if operation.attempts >= max_attempts:
            operations.mark_dead(session, operation, "lost", "the task was lost and its attempts are used up")
            alerts.alert_admins(session, operation)
            dead += 1
            continue
        operations.requeue(session, operation)
        redelivered += 1
    if redelivered or dead:
        logger.warning("reaper: %d operations redelivered, %d dead", redelivered, dead)
    return Reaped(redelivered, dead)


def prune_outbox(session: Session) -> int:
    """Delete published outbox rows past retention, except those of dead operations."""
    dead = select(Operation.id).where(Operation.status == OperationStatus.DEAD)
    result = session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.published_at < utcnow() - OUTBOX_RETENTION,
            OutboxMessage.operation_id.not_in(dead),
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
