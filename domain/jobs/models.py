"""Job postings: what employers publish and candidates search.

Title and location stay plain (they are searched and shown to everyone); description,
requirements, salary range and the AI analysis are sealed with the employer's data key.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Computed, ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from domain.core.db import Base, pg_enum, utcnow
from domain.core.encrypted import Ciphertext, encrypted_json, encrypted_text
from domain.users.models import User


class JobStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CLOSED = "closed"
    EXPIRED = "expired"


class RemoteType(enum.StrEnum):
    ONSITE = "onsite"
    HYBRID = "hybrid"
    REMOTE = "remote"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    employer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[JobStatus] = mapped_column(pg_enum(JobStatus, "job_status"))
    title: Mapped[str] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(200))
    remote_type: Mapped[RemoteType] = mapped_column(pg_enum(RemoteType, "job_remote_type"))
    # Full-text search over the title; 'simple' keeps words as typed (titles mix languages).
    search: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('simple', coalesce(title, ''))", persisted=True)
    )
    description_ciphertext: Mapped[bytes] = mapped_column("description", Ciphertext)
    requirements_ciphertext: Mapped[bytes | None] = mapped_column("requirements", Ciphertext)
    salary_range_ciphertext: Mapped[bytes | None] = mapped_column("salary_range", Ciphertext)
    analysis_ciphertext: Mapped[bytes | None] = mapped_column("analysis", Ciphertext)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    posted_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_search", "search", postgresql_using="gin"),
        Index("ix_jobs_employer_id_created_at", "employer_id", "created_at", "id"),
        # The public listing: live published postings, newest first.
        Index(
            "ix_jobs_published_created_at",
            "created_at",
            "id",
            postgresql_where=text("status = 'published' AND deleted_at IS NULL"),
        ),
        Index("ix_jobs_location", text("lower(location)")),
        Index("ix_jobs_status_expires_at", "status", "expires_at"),
    )

    employer: Mapped[User] = relationship(lazy="select")

    description = encrypted_text("description_ciphertext")
    requirements = encrypted_json("requirements_ciphertext")
    salary_range = encrypted_json("salary_range_ciphertext")
    analysis = encrypted_json("analysis_ciphertext")

    def __init__(self, *, employer: User, **kwargs: Any) -> None:
        sealed = {k: kwargs.pop(k) for k in ("description", "requirements", "salary_range") if k in kwargs}
        kwargs.setdefault("id", uuid.uuid4())
        super().__init__(employer=employer, employer_id=employer.id, **kwargs)
        for key, value in sealed.items():
            setattr(self, key, value)

    def data_key(self) -> bytes:
        """The employer's data key (raises DataKeyShredded once the employer is erased)."""
        return self.employer.data_key()
