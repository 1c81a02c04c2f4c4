"""Every migration upgrades, downgrades and upgrades again on an empty database; data survives 0008."""

import json
import uuid
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from domain.audit import service as audit
from domain.audit.models import AuditEntry
from domain.audit.service import Fact
from domain.core import migrate
from domain.core.config import Settings
from domain.core.db import Base, Database
from tests.conftest import create_database, worker_id

ACTOR = "12345678-1234-5678-1234-567812345678"


def test_upgrade_downgrade_upgrade(servers, settings: Settings):
    url = create_database(servers.database_url, f"deepref_migrations_{worker_id()}")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
        tables = set(inspect(engine).get_table_names())
        assert {"users", "refresh_tokens", "operations", "outbox", "idempotency_keys"} <= tables
        with engine.begin() as connection:
            migrate.downgrade(connection)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with engine.begin() as connection:
            migrate.upgrade(connection)
            # The models and the migrations describe the same schema.
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert {"users", "outbox"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _queue_old_audit_fact(connection, status: str, created_at: str, subject_id: str, request_id: str | None) -> str:
    """An audit fact as the flow before 0008 queued it: an operation and its outbox row."""
    operation_id = str(uuid.uuid4())
    fact = {"action": "test.fact", "subject_type": "thing", "subject_id": subject_id, "actor_id": ACTOR, "data": {}}
    connection.execute(
        text(
            "INSERT INTO operations (id, kind, status, attempts, request_id, created_at, updated_at)"
            " VALUES (:id, 'audit.append', :status, 1, :request_id, :at, :at)"
        ),
        {"id": operation_id, "status": status, "request_id": request_id, "at": created_at},
    )
    connection.execute(
        text(
            "INSERT INTO outbox (id, operation_id, task_name, queue, payload, created_at, available_at,"
            " publish_attempts) VALUES (:id, :operation_id, 'tasks.audit.append_entry', 'audit', :payload, :at, :at, 0)"
        ),
        {
            "id": str(uuid.uuid4()),
            "operation_id": operation_id,
            "payload": json.dumps({"fact": fact, "operation_id": operation_id}),
            "at": created_at,
        },
    )
    return operation_id


def _append_old_entry(connection, operation_id: str) -> None:
    """Entry 1 of a chain appended by the flow before 0008 (it named its operation)."""
    entry = AuditEntry(
        sequence=1,
        recorded_at=datetime(2026, 1, 1, tzinfo=UTC),
        action="test.fact",
        actor_id=None,
        subject_type="thing",
        subject_id="done",
        data={},
        previous_hash=audit.GENESIS,
    )
    connection.execute(
        text(
            "INSERT INTO audit_entries (sequence, recorded_at, action, subject_type, subject_id, data, operation_id,"
            " previous_hash, hash) VALUES (1, :at, 'test.fact', 'thing', 'done', '{}', :operation_id, :previous, :hash)"
        ),
        {
            "at": entry.recorded_at,
            "operation_id": operation_id,
            "previous": audit.GENESIS,
            "hash": audit.entry_hash(entry),
        },
    )


def test_audit_facts_queued_before_0008_are_moved_not_lost(servers, settings: Settings):
    url = create_database(servers.database_url, f"deepref_migrations_data_{worker_id()}")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection, "0007")
            later = _queue_old_audit_fact(connection, "queued", "2026-01-01T10:00:02Z", "later", "req-2")
            earlier = _queue_old_audit_fact(connection, "running", "2026-01-01T10:00:01Z", "earlier", None)
            done = _queue_old_audit_fact(connection, "succeeded", "2026-01-01T10:00:00Z", "done", None)
            _append_old_entry(connection, done)
            migrate.upgrade(connection)
            moved = connection.execute(
                text("SELECT subject_id, actor_id, request_id FROM audit_pending ORDER BY id")
            ).all()
            assert [tuple(row) for row in moved] == [
                ("earlier", uuid.UUID(ACTOR), None),
                ("later", uuid.UUID(ACTOR), "req-2"),
            ]
            statuses = dict(connection.execute(text("SELECT id::text, status::text FROM operations")).all())
            assert statuses == {later: "succeeded", earlier: "succeeded", done: "succeeded"}
            unpublished = connection.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar()
            assert unpublished == 0  # the old task is gone: beat must not publish it

        # The moved facts join the chain appended before the upgrade, which still verifies.
        database = Database(engine)
        assert audit.drain(database) == 2
        with database.transaction() as session:
            verified = audit.verify(session)
            assert (verified.valid, verified.entries) == (True, 3)
            assert [e.subject_id for e in audit.list_entries(session)[0]] == ["later", "earlier", "done"]
            audit.record(session, Fact("test.fact", "thing", "pending", actor_id=ACTOR), request_id="req-3")

        # A downgrade hands a fact still pending back to the old flow, and an upgrade takes it again.
        with engine.begin() as connection:
            migrate.downgrade(connection, "0007")
            requeued = connection.execute(
                text(
                    "SELECT o.status::text, o.request_id, m.task_name, m.published_at, m.payload FROM operations o"
                    " JOIN outbox m ON m.operation_id = o.id WHERE o.id::text NOT IN (:a, :b, :c)"
                ),
                {"a": later, "b": earlier, "c": done},
            ).one()
            status, request_id, task_name, published_at, payload = requeued
            assert (status, request_id, task_name, published_at) == (
                "queued",
                "req-3",
                "tasks.audit.append_entry",
                None,
            )
            assert payload["fact"] == {
                "action": "test.fact",
                "subject_type": "thing",
                "subject_id": "pending",
                "actor_id": ACTOR,
                "data": {},
            }
            migrate.upgrade(connection)
            again = connection.execute(text("SELECT subject_id, request_id FROM audit_pending")).all()
            assert [tuple(row) for row in again] == [("pending", "req-3")]
    finally:
        engine.dispose()
