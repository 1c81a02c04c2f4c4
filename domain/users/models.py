"""Users and their refresh tokens."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.crypto import DecryptionError
from domain.core.db import Base, pg_enum, utcnow
from domain.core.encrypted import Ciphertext, current_keyring, encrypted_json, encrypted_text


class Role(enum.StrEnum):
    JOB_SEEKER = "job_seeker"
    EMPLOYER = "employer"
    REFERRER = "referrer"
    ADMIN = "admin"


class UserStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    ERASED = "erased"


SELF_SERVICE_ROLES = (Role.JOB_SEEKER, Role.EMPLOYER, Role.REFERRER)


class DataKeyShredded(DecryptionError):
    """The user's data key was destroyed: their encrypted data is gone for good."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    email_index: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    email_ciphertext: Mapped[bytes | None] = mapped_column("email", Ciphertext)
    name_ciphertext: Mapped[bytes | None] = mapped_column("name", Ciphertext)
    phone_ciphertext: Mapped[bytes | None] = mapped_column("phone", Ciphertext)
    metadata_ciphertext: Mapped[bytes | None] = mapped_column("metadata", Ciphertext)
    mfa_secret_ciphertext: Mapped[bytes | None] = mapped_column("mfa_secret", Ciphertext)
    wrapped_data_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    password_hash: Mapped[str] = mapped_column(String(100))
    role: Mapped[Role] = mapped_column(pg_enum(Role, "user_role"), index=True)
    status: Mapped[UserStatus] = mapped_column(
        pg_enum(UserStatus, "user_status"), default=UserStatus.ACTIVE, index=True
    )
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone_verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last TOTP time step accepted, so one code cannot be used twice.
    mfa_last_step: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_users_created_at_id", "created_at", "id"),)

    email = encrypted_text("email_ciphertext")
    name = encrypted_text("name_ciphertext")
    phone = encrypted_text("phone_ciphertext")
    profile_metadata = encrypted_json("metadata_ciphertext")
    mfa_secret = encrypted_text("mfa_secret_ciphertext")

    def __init__(self, **kwargs: Any) -> None:
        # Encrypted attributes need the id and the data key before they can be set.
        encrypted = {k: kwargs.pop(k) for k in ("email", "name", "phone", "profile_metadata") if k in kwargs}
        kwargs.setdefault("id", uuid.uuid4())
        kwargs.setdefault("status", UserStatus.ACTIVE)
        kwargs.setdefault("email_verified", False)
        kwargs.setdefault("phone_verified", False)
        kwargs.setdefault("mfa_enabled", False)
        super().__init__(**kwargs)
        keyring = current_keyring()
        self.wrapped_data_key = keyring.wrapper.wrap(keyring.new_data_key(), self.id.bytes)
        for key, value in encrypted.items():
            setattr(self, key, value)

    def data_key(self) -> bytes:
        """The user's data key, unwrapped once per loaded instance."""
        if self.wrapped_data_key is None:
            raise DataKeyShredded(f"user {self.id} has been erased")
        cached: bytes | None = self.__dict__.get("_data_key")
        if cached is None:
            cached = current_keyring().wrapper.unwrap(self.wrapped_data_key, self.id.bytes)
            self.__dict__["_data_key"] = cached
        return cached

    @property
    def is_active(self) -> bool:
        return self.status == UserStatus.ACTIVE


class RefreshToken(Base):
    """One issued refresh token; tokens issued by rotation share a family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
