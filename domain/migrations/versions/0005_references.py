"""References: requests, their referee links, shares with employers

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "references",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("candidate_id", sa.Uuid(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "sent",
                "opened",
                "submitted",
                "verified",
                "flagged",
                "declined",
                "expired",
                "revoked",
                name="reference_status",
            ),
            nullable=False,
        ),
        sa.Column(
            "relationship",
            sa.Enum("manager", "peer", "direct_report", "client", "academic", name="reference_relationship"),
            nullable=False,
        ),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("questionnaire", sa.String(length=32), nullable=False),
        sa.Column("questionnaire_version", sa.Integer(), nullable=False),
        sa.Column("channels", postgresql.ARRAY(sa.String(length=8)), nullable=False),
        sa.Column("referrer_email_index", sa.LargeBinary(), nullable=True),
        sa.Column("referrer_phone_index", sa.LargeBinary(), nullable=True),
        sa.Column("referrer", sa.LargeBinary(), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("referee", sa.LargeBinary(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("verification", sa.LargeBinary(), nullable=True),
        sa.Column("consent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reminders_sent", sa.Integer(), nullable=False),
        sa.Column("automatic_reminders_sent", sa.Integer(), nullable=False),
        sa.Column("last_reminder_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["candidate_id"], ["users.id"], name=op.f("fk_references_candidate_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_references")),
    )
    op.create_index(
        "ix_references_candidate_id_created_at", "references", ["candidate_id", "created_at", "id"], unique=False
    )
    op.create_index(op.f("ix_references_job_id"), "references", ["job_id"], unique=False)
    op.create_index(op.f("ix_references_referrer_email_index"), "references", ["referrer_email_index"], unique=False)
    op.create_index(op.f("ix_references_referrer_phone_index"), "references", ["referrer_phone_index"], unique=False)
    op.create_index("ix_references_status_expires_at", "references", ["status", "expires_at"], unique=False)
    op.create_table(
        "reference_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reference_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["reference_id"],
            ["references.id"],
            name=op.f("fk_reference_links_reference_id_references"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_reference_links_token_hash")),
    )
    op.create_index(op.f("ix_reference_links_reference_id"), "reference_links", ["reference_id"], unique=False)
    op.create_table(
        "reference_shares",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("reference_id", sa.Uuid(), nullable=False),
        sa.Column("employer_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["employer_id"], ["users.id"], name=op.f("fk_reference_shares_employer_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["reference_id"],
            ["references.id"],
            name=op.f("fk_reference_shares_reference_id_references"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_shares")),
        sa.UniqueConstraint("reference_id", "employer_id", name=op.f("uq_reference_shares_reference_id_employer_id")),
    )
    op.create_index(
        "ix_reference_shares_employer_id_created_at",
        "reference_shares",
        ["employer_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_reference_shares_employer_id_created_at", table_name="reference_shares")
    op.drop_table("reference_shares")
    op.drop_index(op.f("ix_reference_links_reference_id"), table_name="reference_links")
    op.drop_table("reference_links")
    op.drop_index("ix_references_status_expires_at", table_name="references")
    op.drop_index(op.f("ix_references_referrer_phone_index"), table_name="references")
    op.drop_index(op.f("ix_references_referrer_email_index"), table_name="references")
    op.drop_index(op.f("ix_references_job_id"), table_name="references")
    op.drop_index("ix_references_candidate_id_created_at", table_name="references")
    op.drop_table("references")
    for enum_name in ("reference_relationship", "reference_status"):
        sa.Enum(name=enum_name).drop(op.get_bind(), checkfirst=True)
