"""Operations and the outbox that guarantees their tasks get published."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Enum, ForeignKey, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from domain.core.db import Base, utcnow
from domain.core.encrypted import Ciphertext, current_keyring, encrypted_json
from domain.users.models import User


class OperationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.DEAD, OperationStatus.CANCELLED}
)


class Operation(Base):
    """The job record of one asynchronous request."""

    __tablename__ = "operations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[OperationStatus] = mapped_column(
        Enum(OperationStatus, name="operation_status", values_callable=lambda ms: [m.value for m in ms]),
        default=OperationStatus.QUEUED,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # Results and errors may carry personal data: sealed with the owner's data key.
    result_ciphertext: Mapped[bytes | None] = mapped_column("result", Ciphertext)
    error_ciphertext: Mapped[bytes | None] = mapped_column("error", Ciphertext)
    error_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_operations_user_id_created_at", "user_id", "created_at"),
        Index("ix_operations_status_updated_at", "status", "updated_at"),
    )

    owner: Mapped[User | None] = relationship(lazy="select")
    result = encrypted_json("result_ciphertext")
    error = encrypted_json("error_ciphertext")

    def data_key(self) -> bytes:
        """The owner's data key; operations without an owner use the service key."""
        if self.user_id is None:
            return current_keyring().service_key
        owner = self.owner
        if owner is None:
            raise LookupError(f"operation {self.id} has no owner row")
        return owner.data_key()


class OutboxMessage(Base):
    """A task to publish, written in the same transaction as the change that needs it."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    operation_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("operations.id", ondelete="CASCADE"), index=True)
    task_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(32))
    # Ids only: Celery messages never carry personal data.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    published_at: Mapped[datetime | None]
    publish_attempts: Mapped[int] = mapped_column(Integer, default=0)

    # Declared so the unit of work inserts the operation before its outbox rows.
    operation: Mapped[Operation | None] = relationship(lazy="raise")

    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "available_at",
            postgresql_where=text("published_at IS NULL"),
        ),
    )
