"""Notifications: one row per email or SMS we send, sealed with its owner's data key."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from domain.core.db import Base, pg_enum, utcnow
from domain.core.encrypted import Ciphertext, encrypted_text
from domain.operations.models import Operation
from domain.users.models import User


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Notification(Base):
    """One message to one recipient.

    `owner` is the user whose data key seals the row: the addressee when they have an
    account, otherwise the user on whose behalf we write (a candidate writing to a referee).
    Erasing the owner makes the recipient and the body unreadable.
    """

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # One notification per operation: a redelivered task finds the row its first delivery wrote.
    operation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("operations.id", ondelete="SET NULL"), unique=True
    )
    channel: Mapped[Channel] = mapped_column(pg_enum(Channel, "notification_channel"))
    template: Mapped[str] = mapped_column(String(64))
    status: Mapped[NotificationStatus] = mapped_column(
        pg_enum(NotificationStatus, "notification_status"), default=NotificationStatus.PENDING
    )
    recipient_ciphertext: Mapped[bytes] = mapped_column("recipient", Ciphertext)
    subject_ciphertext: Mapped[bytes | None] = mapped_column("subject", Ciphertext)
    body_text_ciphertext: Mapped[bytes] = mapped_column("body_text", Ciphertext)
    body_html_ciphertext: Mapped[bytes | None] = mapped_column("body_html", Ciphertext)
    provider_message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Short and free of personal data: an error class or a provider status code, never a reply text.
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    owner: Mapped[User] = relationship(lazy="select")
    # Declared so the unit of work writes the operation before a notification pointing at it.
    operation: Mapped[Operation | None] = relationship(lazy="raise")

    recipient = encrypted_text("recipient_ciphertext")
    subject = encrypted_text("subject_ciphertext")
    body_text = encrypted_text("body_text_ciphertext")
    body_html = encrypted_text("body_html_ciphertext")

    def __init__(self, *, owner: User, **kwargs: Any) -> None:
        # Encrypted attributes need the id and the owner's data key before they can be set.
        sealed = {k: kwargs.pop(k) for k in ("recipient", "subject", "body_text", "body_html") if k in kwargs}
        kwargs.setdefault("id", uuid.uuid4())
        kwargs.setdefault("status", NotificationStatus.PENDING)
        kwargs.setdefault("attempts", 0)
        super().__init__(owner=owner, owner_id=owner.id, **kwargs)
        for key, value in sealed.items():
            setattr(self, key, value)

    def data_key(self) -> bytes:
        """The owner's data key (raises DataKeyShredded once the owner is erased)."""
        return self.owner.data_key()
