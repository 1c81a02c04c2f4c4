"""References, the links that reach their referees, and the shares with employers.

What identifies or was written by a person — the referrer's contact, the request (its
questions and the candidate's consent), the response and the verification — is sealed
with the candidate's data key: erasing the candidate erases their references.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column, relationship

from domain.core.db import Base, pg_enum, utcnow
from domain.core.encrypted import Ciphertext, encrypted_json
from domain.jobs import models as _jobs  # noqa: F401  (the jobs table that job_id points to)
from domain.users.models import User


class ReferenceStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    OPENED = "opened"
    SUBMITTED = "submitted"
    VERIFIED = "verified"
    FLAGGED = "flagged"
    DECLINED = "declined"
    EXPIRED = "expired"
    REVOKED = "revoked"


# Waiting for the referee: the link works, reminders may be sent, the request may expire.
AWAITING_REFEREE = frozenset({ReferenceStatus.PENDING, ReferenceStatus.SENT, ReferenceStatus.OPENED})
# Verification done: the reference may be shared.
COMPLETED = frozenset({ReferenceStatus.VERIFIED, ReferenceStatus.FLAGGED})


class Relationship(enum.StrEnum):
    MANAGER = "manager"
    PEER = "peer"
    DIRECT_REPORT = "direct_report"
    CLIENT = "client"
    ACADEMIC = "academic"


class Reference(Base):
    """One request to one referrer, and everything that came of it."""

    __tablename__ = "references"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    candidate_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[ReferenceStatus] = mapped_column(pg_enum(ReferenceStatus, "reference_status"))
    relation: Mapped[Relationship] = mapped_column("relationship", pg_enum(Relationship, "reference_relationship"))
    # The job posting this reference is for, if any.
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    questionnaire: Mapped[str] = mapped_column(String(32))
    questionnaire_version: Mapped[int] = mapped_column(Integer)
    channels: Mapped[list[str]] = mapped_column(ARRAY(String(8)))
    # Keyed hashes of the referrer's email and phone: a registered referrer finds the requests
    # addressed to them, and reuse of one contact across a candidate's references is spotted.
    referrer_email_index: Mapped[bytes | None] = mapped_column(LargeBinary, index=True)
    referrer_phone_index: Mapped[bytes | None] = mapped_column(LargeBinary, index=True)
    referrer_ciphertext: Mapped[bytes] = mapped_column("referrer", Ciphertext)
    request_ciphertext: Mapped[bytes] = mapped_column("request", Ciphertext)
    referee_ciphertext: Mapped[bytes | None] = mapped_column("referee", Ciphertext)
    response_ciphertext: Mapped[bytes | None] = mapped_column("response", Ciphertext)
    verification_ciphertext: Mapped[bytes | None] = mapped_column("verification", Ciphertext)
    consent_at: Mapped[datetime]
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    automatic_reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    last_reminder_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    submitted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_references_candidate_id_created_at", "candidate_id", "created_at", "id"),
        Index("ix_references_status_expires_at", "status", "expires_at"),
    )

    candidate: Mapped[User] = relationship(lazy="select")
    shares: Mapped[list[ReferenceShare]] = relationship(
        back_populates="reference", lazy="raise", order_by="ReferenceShare.created_at"
    )

    # {"name", "email", "phone"}
    referrer = encrypted_json("referrer_ciphertext")
    # {"questions": [...], "consent": {"at", "ip", "userAgent"}}
    request = encrypted_json("request_ciphertext")
    # {"visits": [{"at", "ip", "userAgent"}], "declineReason"}: what the server saw of the referee
    referee = encrypted_json("referee_ciphertext")
    # {"answers": [...], "consent": {"at", "ip", "userAgent"}}
    response = encrypted_json("response_ciphertext")
    # {"score", "summary", "signals", "provider", "model", "deterministic", "verifiedAt"}
    verification = encrypted_json("verification_ciphertext")

    def __init__(self, *, candidate: User, **kwargs: Any) -> None:
        # Encrypted attributes need the id and the candidate's data key before they can be set.
        sealed = {k: kwargs.pop(k) for k in ("referrer", "request") if k in kwargs}
        kwargs.setdefault("id", uuid.uuid4())
        kwargs.setdefault("reminders_sent", 0)
        kwargs.setdefault("automatic_reminders_sent", 0)
        super().__init__(candidate=candidate, candidate_id=candidate.id, **kwargs)
        for key, value in sealed.items():
            setattr(self, key, value)

    def data_key(self) -> bytes:
        """The candidate's data key (raises DataKeyShredded once the candidate is erased)."""
        return self.candidate.data_key()


class ReferenceLink(Base):
    """One link sent to the referee; only the hash of its token is kept.

    Each message (the request and every reminder) carries its own token, so no token has
    to be stored to be sent again; all of a reference's links live and die with it.
    """

    __tablename__ = "reference_links"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    reference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("references.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    reference: Mapped[Reference] = relationship(lazy="raise")


class ReferenceShare(Base):
    """A completed reference made readable by one employer; `revoked_at` ends it."""

    __tablename__ = "reference_shares"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    reference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("references.id", ondelete="CASCADE"))
    employer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("reference_id", "employer_id"),
        Index("ix_reference_shares_employer_id_created_at", "employer_id", "created_at", "id"),
    )

    reference: Mapped[Reference] = relationship(back_populates="shares", lazy="raise")
    employer: Mapped[User] = relationship(lazy="raise")
