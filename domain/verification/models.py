"""One-time codes sent to prove control of an email address or phone number."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, Integer, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.db import Base, utcnow


class Channel(enum.StrEnum):
    EMAIL = "email"
    PHONE = "phone"


class VerificationCode(Base):
    """A code sent to one destination; only its keyed hash is stored."""

    __tablename__ = "verification_codes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[Channel] = mapped_column(
        Enum(Channel, name="verification_channel", values_callable=lambda ms: [m.value for m in ms])
    )
    code_hash: Mapped[bytes] = mapped_column(LargeBinary)
    # Keyed hash of the address or number the code was sent to: a code proves that one only.
    destination_hash: Mapped[bytes] = mapped_column(LargeBinary)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_verification_codes_user_id_channel_created_at", "user_id", "channel", "created_at"),)
