"""Record facts in the audit trail, verify the chain, anchor its head.

A fact is recorded in the caller's transaction as an operation on the `audit` queue, so
requests never wait for the chain; the task appends it (one appender at a time, under a
PostgreSQL advisory lock), and a redelivered task finds the entry it already appended.
Each entry's hash covers the previous hash and the entry's content, so changing, removing
or reordering any entry breaks every later link; anchors (head hash + MAC, taken by beat)
make even a fully recomputed chain detectable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from domain.audit.models import AuditAnchor, AuditEntry
from domain.core.crypto import derive_key
from domain.core.db import utcnow
from domain.core.encrypted import current_keyring
from domain.core.errors import InvalidInput
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.models import Operation

GENESIS = bytes(32)
# pg_advisory_xact_lock key that serialises appends ("deeprefa").
APPEND_LOCK = 0x6465657072656661
KIND = "audit.append"
VERIFY_BATCH = 1000
Scalar = str | int | bool | None


@dataclass(frozen=True)
class Fact:
    """What happened, in ids and codes only (the trail is never encrypted, so never personal)."""

    action: str
    subject_type: str
    subject_id: str
    actor_id: str | None = None
    data: dict[str, Scalar] | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "actor_id": self.actor_id,
            "data": self.data or {},
        }


def record(session: Session, fact: Fact, request_id: str | None = None) -> Operation:
    """Queue `fact` for the audit trail; it is appended on the `audit` queue after commit."""
    for key, value in (fact.data or {}).items():
        if not isinstance(value, str | int | bool | type(None)) or isinstance(value, float):
            raise InvalidInput(f"audit data {key!r} must be a string, integer, boolean or null")
    return operations.enqueue(
        session,
        owner_id=None,
        kind=KIND,
        route=routes.APPEND_AUDIT,
        payload={"fact": fact.to_payload()},
        request_id=request_id,
    )


def append(session: Session, fact: dict[str, Any], operation_id: uuid.UUID | None = None) -> AuditEntry:
    """Append `fact` to the chain (once per operation); return its entry."""
    if operation_id is not None:
        existing = session.scalars(select(AuditEntry).where(AuditEntry.operation_id == operation_id)).first()
        if existing is not None:
            return existing
    session.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK)))
    head = session.scalars(select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(1)).first()
    entry = AuditEntry(
        sequence=head.sequence + 1 if head else 1,
        recorded_at=utcnow(),
        action=fact["action"],
        actor_id=uuid.UUID(fact["actor_id"]) if fact.get("actor_id") else None,
        subject_type=fact["subject_type"],
        subject_id=fact["subject_id"],
        data=fact.get("data") or {},
        operation_id=operation_id,
        previous_hash=head.hash if head else GENESIS,
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    return entry


def entry_hash(entry: AuditEntry) -> bytes:
    """SHA-256 of the previous hash and the entry's canonical JSON."""
    content = {
        "sequence": entry.sequence,
        "recordedAt": entry.recorded_at.astimezone(UTC).isoformat(),
        "action": entry.action,
        "actorId": str(entry.actor_id) if entry.actor_id else None,
        "subjectType": entry.subject_type,
        "subjectId": entry.subject_id,
        "data": entry.data,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(entry.previous_hash + canonical).digest()


@dataclass(frozen=True)
class Verification:
    valid: bool
    entries: int
    anchors: int
    broken_at: int | None = None
    reason: str | None = None
    head: AuditEntry | None = None


def verify(session: Session) -> Verification:
    """Walk the whole chain and every anchor; say where the first break is, if any."""
    previous_sequence, previous_hash, checked, head = 0, GENESIS, 0, None
    for entry in _entries(session):
        problem = _link_problem(entry, previous_sequence, previous_hash)
        if problem is not None:
            return Verification(False, checked, 0, entry.sequence, problem, head)
        previous_sequence, previous_hash, checked, head = entry.sequence, entry.hash, checked + 1, entry
    anchors = list(session.scalars(select(AuditAnchor).order_by(AuditAnchor.id)))
    for anchor in anchors:
        problem = _anchor_problem(session, anchor)
        if problem is not None:
            return Verification(False, checked, len(anchors), anchor.sequence, problem, head)
    return Verification(True, checked, len(anchors), head=head)


def _entries(session: Session) -> Iterator[AuditEntry]:
    after = 0
    while True:
        batch = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.sequence > after).order_by(AuditEntry.sequence).limit(VERIFY_BATCH)
            )
        )
        yield from batch
        if len(batch) < VERIFY_BATCH:
            return
        after = batch[-1].sequence
        for entry in batch:  # keep memory flat on a long chain (their loaded values stay readable)
            session.expunge(entry)


def _link_problem(entry: AuditEntry, previous_sequence: int, previous_hash: bytes) -> str | None:
    if entry.sequence != previous_sequence + 1:
        return f"entry {previous_sequence + 1} is missing"
    if entry.previous_hash != previous_hash:
        return "the entry does not link to the previous one"
    if not hmac.compare_digest(entry.hash, entry_hash(entry)):
        return "the entry's content does not match its hash"
    return None


def _anchor_problem(session: Session, anchor: AuditAnchor) -> str | None:
    if not hmac.compare_digest(anchor.mac, _anchor_mac(anchor.sequence, anchor.hash, anchor.anchored_at)):
        return "an anchor's MAC is wrong: the anchor was forged or altered"
    anchored = session.get(AuditEntry, anchor.sequence)
    if anchored is None or anchored.hash != anchor.hash:
        return "the chain differs from an anchor taken earlier: it was rewritten"
    return None


def anchor(session: Session) -> AuditAnchor | None:
    """Pin the chain's current head with a MAC; None when nothing was appended since the last anchor."""
    head = session.scalars(select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(1)).first()
    last = session.scalars(select(AuditAnchor).order_by(AuditAnchor.id.desc()).limit(1)).first()
    if head is None or (last is not None and last.sequence == head.sequence):
        return None
    now = utcnow()
    pinned = AuditAnchor(anchored_at=now, sequence=head.sequence, hash=head.hash)
    pinned.mac = _anchor_mac(head.sequence, head.hash, now)
    session.add(pinned)
    session.flush()
    return pinned


def _anchor_mac(sequence: int, head_hash: bytes, anchored_at: datetime) -> bytes:
    key = derive_key(current_keyring().service_key, "deepref:audit-anchor")
    message = f"{sequence}:{head_hash.hex()}:{anchored_at.astimezone(UTC).isoformat()}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def list_entries(
    session: Session,
    *,
    action: str | None = None,
    subject_type: str | None = None,
    subject_id: str | None = None,
    before: int | None = None,
    limit: int = 20,
) -> tuple[list[AuditEntry], int | None]:
    """Entries newest first, filtered; returns the page and the sequence to continue before."""
    query = select(AuditEntry).order_by(AuditEntry.sequence.desc()).limit(limit + 1)
    if action:
        query = query.where(AuditEntry.action == action)
    if subject_type:
        query = query.where(AuditEntry.subject_type == subject_type)
    if subject_id:
        query = query.where(AuditEntry.subject_id == subject_id)
    if before is not None:
        query = query.where(AuditEntry.sequence < before)
    rows = list(session.scalars(query))
    return rows[:limit], rows[limit - 1].sequence if len(rows) > limit else None
