"""Notifications: every email and SMS sent, sealed with the owner's data key

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("operation_id", sa.Uuid(), nullable=True),
        sa.Column("channel", sa.Enum("email", "sms", name="notification_channel"), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Enum("pending", "sent", "failed", name="notification_status"), nullable=False),
        sa.Column("recipient", sa.LargeBinary(), nullable=False),
        sa.Column("subject", sa.LargeBinary(), nullable=True),
        sa.Column("body_text", sa.LargeBinary(), nullable=False),
        sa.Column("body_html", sa.LargeBinary(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["operation_id"],
            ["operations.id"],
            name=op.f("fk_notifications_operation_id_operations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_notifications_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        # Also the index on the operation_id foreign key.
        sa.UniqueConstraint("operation_id", name=op.f("uq_notifications_operation_id")),
    )
    op.create_index(op.f("ix_notifications_owner_id"), "notifications", ["owner_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_notifications_owner_id"), table_name="notifications")
    op.drop_table("notifications")
    for enum_name in ("notification_status", "notification_channel"):
        sa.Enum(name=enum_name).drop(op.get_bind(), checkfirst=True)
