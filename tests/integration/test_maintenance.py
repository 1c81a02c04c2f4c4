"""What beat runs: the outbox relay, the reaper for lost operations, pruning."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from beat import tasks as beat_tasks
from domain.core.db import Database, utcnow
from domain.idempotency.models import IdempotencyKey
from domain.operations import maintenance, routes
from domain.operations import service as operations
from domain.operations.dispatch import OutgoingTask
from domain.operations.models import Operation, OperationStatus, OutboxMessage
from tests.conftest import Account


@pytest.fixture
def db(connection) -> Database:
    """The test database without a dispatcher: like a process killed between commit and publish."""
    return Database(connection)


def _enqueue(database: Database, account: Account, count: int = 1) -> list[uuid.UUID]:
    with database.transaction() as session:
        return [
            operations.enqueue(session, owner_id=uuid.UUID(account.id), kind="test.kind", route=routes.DELIVER_EMAIL).id
            for _ in range(count)
        ]


def _unpublished(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).where(OutboxMessage.published_at.is_(None))) or 0


def test_the_relay_publishes_what_nobody_published_in_batches_and_once(db, account):
    ids = _enqueue(db, account, maintenance.BATCH_SIZE + 1)
    assert maintenance.relay_outbox(db, lambda task: None, grace_seconds=30) == 0  # a worker may still claim them
    sent: list[OutgoingTask] = []
    assert maintenance.relay_outbox(db, sent.append, grace_seconds=0) == len(ids)
    assert sorted(uuid.UUID(t.kwargs["operation_id"]) for t in sent) == sorted(ids)
    assert all(t.queue == "email" and t.name == routes.DELIVER_EMAIL.name for t in sent)
    assert _unpublished(db) == 0
    assert maintenance.relay_outbox(db, sent.append, grace_seconds=0) == 0


def test_the_relay_keeps_rows_while_the_broker_refuses(db, account):
    _enqueue(db, account, 2)

    def broker_down(task: OutgoingTask) -> None:
        raise ConnectionError("broker unreachable")

    assert maintenance.relay_outbox(db, broker_down, grace_seconds=0) == 0
    assert _unpublished(db) == 2
    with db.transaction() as session:
        assert max(session.scalars(select(OutboxMessage.publish_attempts))) == 1


def test_the_reaper_redelivers_lost_operations_and_buries_exhausted_ones(db, account, admin, published):
    running, exhausted, queued, fresh = _enqueue(db, account, 4)
    long_ago = utcnow() - timedelta(hours=1)
    with db.transaction() as session:
        session.execute(
            update(Operation)
            .where(Operation.id.in_([running, exhausted]))
            .values(status=OperationStatus.RUNNING, started_at=long_ago, attempts=1)
        )
        session.execute(update(Operation).where(Operation.id == exhausted).values(attempts=3))
        session.execute(update(Operation).where(Operation.id == queued).values(updated_at=long_ago))
        session.execute(update(OutboxMessage).values(published_at=long_ago))
        session.execute(update(OutboxMessage).where(OutboxMessage.operation_id == fresh).values(published_at=utcnow()))
    with db.transaction() as session:
        reaped = maintenance.reap_stuck(session, max_attempts=3, lost_after_seconds=60)
    assert (reaped.redelivered, reaped.dead) == (2, 1)
    with db.transaction() as session:
        status = dict(session.execute(select(Operation.id, Operation.status)).all())
        messages = dict(
            session.execute(select(OutboxMessage.operation_id, func.count()).group_by(OutboxMessage.operation_id)).all()
        )
        alerts = session.scalars(select(Operation).where(Operation.kind == "admin.alert")).all()
    assert status[running] == status[queued] == status[fresh] == OperationStatus.QUEUED
    assert status[exhausted] == OperationStatus.DEAD
    assert (messages[running], messages[queued], messages[fresh], messages[exhausted]) == (2, 2, 1, 1)
    assert [a.user_id for a in alerts] == [uuid.UUID(admin.id)]


def test_pruning_keeps_recent_rows_and_the_payloads_of_dead_operations(db, account):
    old, dead, recent = _enqueue(db, account, 3)
    with db.transaction() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.operation_id.in_([old, dead]))
            .values(published_at=utcnow() - timedelta(days=8))
        )
        session.execute(update(OutboxMessage).where(OutboxMessage.operation_id == recent).values(published_at=utcnow()))
        session.execute(update(Operation).where(Operation.id == dead).values(status=OperationStatus.DEAD))
    with db.transaction() as session:
        assert maintenance.prune_outbox(session) == 1
        left = set(session.scalars(select(OutboxMessage.operation_id)))
    assert left == {dead, recent}


@pytest.mark.usefixtures("worker")
def test_the_beat_tasks_run_on_a_worker_runtime(database, account):
    with database.transaction() as session:
        session.add(
            IdempotencyKey(
                id=uuid.uuid4(),
                scope="user:x",
                key="k",
                request_hash=b"h",
                state="completed",
                created_at=utcnow() - timedelta(days=2),
                expires_at=utcnow() - timedelta(days=1),
            )
        )
    assert beat_tasks.prune_expired_records() == {"idempotencyKeys": 1, "outboxRows": 0}
    assert beat_tasks.reap_stuck_operations() == {"redelivered": 0, "dead": 0}
    assert beat_tasks.relay_outbox() == 0
    assert beat_tasks.restore_unacked_messages() is True


def test_a_dead_alert_raises_no_alert_and_nobody_to_alert_is_logged(db, account, caplog):
    from domain.operations import alerts

    [operation_id] = _enqueue(db, account)
    with db.transaction() as session:
        operation = session.get(Operation, operation_id)
        assert alerts.alert_admins(session, operation) == 0  # no administrator exists
        operation.kind = alerts.ALERT_KIND
        assert alerts.alert_admins(session, operation) == 0
    assert "there is no administrator to alert" in caplog.text
    assert "not alerting about it" in caplog.text
