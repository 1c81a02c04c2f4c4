"""Audit trail: facts wait in audit_pending and are appended in batches

Entries no longer belong to an operation (`operation_id` goes; the hash never covered
it) but keep the id of the request that recorded them. Facts of audit operations that
had not finished are moved into audit_pending, in the order they were queued, and those
operations are marked succeeded (with no result: a migration holds no key to seal one),
so nothing recorded before the upgrade is lost; their outbox rows are marked published,
since the task they name no longer exists. The downgrade turns pending facts back into
queued audit operations with their outbox rows, which beat publishes.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The old flow's operation kind is 'audit.append', its task 'tasks.audit.append_entry'.
MOVE_UNFINISHED_FACTS = """
INSERT INTO audit_pending (recorded_at, action, actor_id, subject_type, subject_id, data, request_id)
SELECT o.created_at, m.fact->>'action', (m.fact->>'actor_id')::uuid, m.fact->>'subject_type',
       m.fact->>'subject_id', COALESCE(m.fact->'data', '{}'::jsonb), o.request_id
FROM operations o
CROSS JOIN LATERAL (
    SELECT payload->'fact' AS fact FROM outbox
    WHERE outbox.operation_id = o.id ORDER BY outbox.created_at DESC LIMIT 1
) m
WHERE o.kind = 'audit.append' AND o.status IN ('queued', 'running') AND m.fact IS NOT NULL
ORDER BY o.created_at, o.id
"""

FINISH_MOVED_OPERATIONS = """
UPDATE operations SET status = 'succeeded', finished_at = now(), updated_at = now()
WHERE kind = 'audit.append' AND status IN ('queued', 'running')
"""

RETIRE_OLD_MESSAGES = """
UPDATE outbox SET published_at = now() WHERE task_name = 'tasks.audit.append_entry' AND published_at IS NULL
"""

# The old flow: one queued operation and one outbox row per fact (beat publishes the rows).
REQUEUE_PENDING_FACTS = """
WITH pending AS MATERIALIZED (
    SELECT p.*, gen_random_uuid() AS operation_id FROM audit_pending p
), operations_added AS (
    INSERT INTO operations (id, kind, status, attempts, request_id, created_at, updated_at)
    SELECT operation_id, 'audit.append', 'queued'::operation_status, 0, request_id, recorded_at, now() FROM pending
)
INSERT INTO outbox (id, operation_id, task_name, queue, payload, created_at, available_at, publish_attempts)
SELECT gen_random_uuid(), operation_id, 'tasks.audit.append_entry', 'audit',
       jsonb_build_object(
           'fact', jsonb_build_object(
               'action', action, 'subject_type', subject_type, 'subject_id', subject_id,
               'actor_id', actor_id::text, 'data', data
           ),
           'operation_id', operation_id::text
       ),
       recorded_at, recorded_at, 0
FROM pending ORDER BY id
"""


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("subject_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )
    op.add_column("audit_entries", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.execute(MOVE_UNFINISHED_FACTS)
    op.execute(FINISH_MOVED_OPERATIONS)
    op.execute(RETIRE_OLD_MESSAGES)
    op.drop_constraint(op.f("uq_audit_entries_operation_id"), "audit_entries", type_="unique")
    op.drop_constraint(op.f("fk_audit_entries_operation_id_operations"), "audit_entries", type_="foreignkey")
    op.drop_column("audit_entries", "operation_id")


def downgrade() -> None:
    op.add_column("audit_entries", sa.Column("operation_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        op.f("fk_audit_entries_operation_id_operations"),
        "audit_entries",
        "operations",
        ["operation_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_unique_constraint(op.f("uq_audit_entries_operation_id"), "audit_entries", ["operation_id"])
    op.drop_column("audit_entries", "request_id")
    op.execute(REQUEUE_PENDING_FACTS)
    op.drop_table("audit_pending")
