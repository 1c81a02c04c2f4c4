"""Job postings, searchable by title

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("employer_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Enum("draft", "published", "closed", "expired", name="job_status"), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("location", sa.String(length=200), nullable=True),
        sa.Column("remote_type", sa.Enum("onsite", "hybrid", "remote", name="job_remote_type"), nullable=False),
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('simple', coalesce(title, ''))", persisted=True),
            nullable=False,
        ),
        sa.Column("description", sa.LargeBinary(), nullable=False),
        sa.Column("requirements", sa.LargeBinary(), nullable=True),
        sa.Column("salary_range", sa.LargeBinary(), nullable=True),
        sa.Column("analysis", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["employer_id"], ["users.id"], name=op.f("fk_jobs_employer_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_employer_id_created_at", "jobs", ["employer_id", "created_at", "id"], unique=False)
    op.create_index("ix_jobs_location", "jobs", [sa.literal_column("lower(location)")], unique=False)
    op.create_index(
        "ix_jobs_published_created_at",
        "jobs",
        ["created_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'published' AND deleted_at IS NULL"),
    )
    op.create_index("ix_jobs_search", "jobs", ["search"], unique=False, postgresql_using="gin")
    op.create_index("ix_jobs_status_expires_at", "jobs", ["status", "expires_at"], unique=False)
    op.create_foreign_key(
        op.f("fk_references_job_id_jobs"), "references", "jobs", ["job_id"], ["id"], ondelete="SET NULL"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("fk_references_job_id_jobs"), "references", type_="foreignkey")
    op.drop_index("ix_jobs_status_expires_at", table_name="jobs")
    op.drop_index("ix_jobs_search", table_name="jobs", postgresql_using="gin")
    op.drop_index(
        "ix_jobs_published_created_at",
        table_name="jobs",
        postgresql_where=sa.text("status = 'published' AND deleted_at IS NULL"),
    )
    op.drop_index("ix_jobs_location", table_name="jobs")
    op.drop_index("ix_jobs_employer_id_created_at", table_name="jobs")
    op.drop_table("jobs")
    for enum_name in ("job_remote_type", "job_status"):
        sa.Enum(name=enum_name).drop(op.get_bind(), checkfirst=True)
