"""Audit entries (a hash chain), the facts waiting to join it, and the anchors that pin its head."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, LargeBinary, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.db import Base


class FactColumns:
    """What a fact is, as both the chain's entries and the facts waiting for it store it."""

    recorded_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[uuid.UUID | None]
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # The request (or task) that recorded the fact, for tracing; not covered by the hash.
    request_id: Mapped[str | None] = mapped_column(String(64))


class AuditEntry(FactColumns, Base):
    """One recorded fact. `hash` covers the previous entry's hash and this entry's content.

    Entries hold ids and codes only, never personal data: the chain must stay verifiable
    after a user is erased, so nothing in it can be crypto-shredded.
    """

    __tablename__ = "audit_entries"

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    previous_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        Index("ix_audit_entries_subject", "subject_type", "subject_id", "sequence"),
        Index("ix_audit_entries_actor_id", "actor_id"),
        Index("ix_audit_entries_action", "action"),
    )


class AuditPending(FactColumns, Base):
    """A fact recorded but not yet appended to the chain; `id` is the recording order.

    Written in the recording transaction (one cheap insert); the drain appends pending
    facts in `id` order and deletes them in the same transaction.
    """

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)


class AuditAnchor(Base):
    """The chain's head at a moment, MACed with a key the database does not hold.

    Rewriting history would mean recomputing every later hash; an anchor makes that
    detectable even for someone who can write to the database, since they cannot forge
    the MAC without the master key.
    """

    __tablename__ = "audit_anchors"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    anchored_at: Mapped[datetime]
    sequence: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary)
    mac: Mapped[bytes] = mapped_column(LargeBinary)
