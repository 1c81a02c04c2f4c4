"""Record facts in the audit trail, verify the chain, anchor its head.

Recording a fact costs the caller one insert into `audit_pending`, in its own transaction,
so requests never wait for the chain. After the commit one `tasks.audit.drain` wake-up
goes to the `audit` queue (one per transaction, and none while another is still queued);
beat also runs the drain every `AUDIT_DRAIN_SECONDS`, so a lost wake-up delays a fact but
never strands it. The drain appends pending facts in recording order, in batches: each
batch is chained onto the head, inserted, and removed from `audit_pending` in one
transaction under a PostgreSQL advisory lock (one appender at a time), so a redelivered
or concurrent drain finds nothing left to append twice.

Each entry's hash covers the previous hash and the entry's content, so changing, removing
or reordering any entry breaks every later link; anchors (head hash + MAC, taken by beat)
make even a fully recomputed chain detectable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select
from sqlalchemy.orm import Session

from domain.audit.models import AuditAnchor, AuditEntry, AuditPending
from domain.core.crypto import derive_key
from domain.core.db import Database, utcnow
from domain.core.encrypted import current_keyring
from domain.core.errors import InvalidInput
from domain.core.logging import request_id_var
from domain.operations import routes
from domain.operations.dispatch import stage_wakeup

GENESIS = bytes(32)
# pg_advisory_xact_lock key that serialises appends ("deeprefa").
APPEND_LOCK = 0x6465657072656661
# Pending facts appended per transaction by the drain.
DRAIN_BATCH = 500
VERIFY_BATCH = 1000
# What an entry's hash covers, besides the previous hash.
HASHED = ("sequence", "recorded_at", "action", "actor_id", "subject_type", "subject_id", "data")
Scalar = str | int | bool | None


@dataclass(frozen=True)
class Fact:
    """What happened, in ids and codes only (the trail is never encrypted, so never personal)."""

    action: str
    subject_type: str
    subject_id: str
    actor_id: str | None = None
    data: dict[str, Scalar] | None = None


def record(session: Session, fact: Fact, request_id: str | None = None) -> None:
    """Queue `fact` for the audit trail; the `audit` queue appends it after commit.

    Raises InvalidInput when `fact.data` holds anything but strings, integers, booleans and
    nulls. `request_id` defaults to the id of the request (or task) being served; it is kept
    on the entry, outside its hash.
    """
    for key, value in (fact.data or {}).items():
        if not isinstance(value, str | int | bool | type(None)) or isinstance(value, float):
            raise InvalidInput(f"audit data {key!r} must be a string, integer, boolean or null")
    pending = AuditPending(
        recorded_at=utcnow(),
        action=fact.action,
        actor_id=uuid.UUID(fact.actor_id) if fact.actor_id else None,
        subject_type=fact.subject_type,
        subject_id=fact.subject_id,
        data=dict(fact.data or {}),
        request_id=request_id if request_id is not None else request_id_var.get(),
    )
    session.add(pending)
    stage_wakeup(session, routes.DRAIN_AUDIT)


def drain(database: Database) -> int:
    """Append every pending fact to the chain, oldest first; return how many were appended.

    Works in transactions of up to DRAIN_BATCH facts; a drain stopped midway keeps what it
    committed, and the next one continues from there.
    """
    appended = 0
    while True:
        with database.transaction() as session:
            batch = _append_batch(session, DRAIN_BATCH)
        appended += batch
        if batch < DRAIN_BATCH:
            return appended


def _append_batch(session: Session, limit: int) -> int:
    """Append up to `limit` pending facts, in recording order, and remove them; return how many."""
    session.execute(select(func.pg_advisory_xact_lock(APPEND_LOCK)))
    # Read under the lock: a drain that held it before has committed, its facts are gone.
    pending = session.execute(select(AuditPending.__table__).order_by(AuditPending.id).limit(limit)).all()
    if not pending:
        return 0
    head = session.execute(
        select(AuditEntry.sequence, AuditEntry.hash).order_by(AuditEntry.sequence.desc()).limit(1)
    ).first()
    after = (head.sequence, head.hash) if head is not None else (0, GENESIS)
    session.execute(insert(AuditEntry), _chained(pending, after, utcnow()))
    session.execute(
        delete(AuditPending).where(AuditPending.id.in_([row.id for row in pending])),
        execution_options={"synchronize_session": False},
    )
    return len(pending)


def _chained(pending: Sequence[Row[Any]], after: tuple[int, bytes], now: datetime) -> list[dict[str, Any]]:
    """The entries for `pending`, each linked to the one before, the first to `after` (sequence, hash)."""
    sequence, previous = after
    entries = []
    for row in pending:
        sequence += 1
        entry = {
            "sequence": sequence,
            "recorded_at": now,
            "action": row.action,
            "actor_id": row.actor_id,
            "subject_type": row.subject_type,
            "subject_id": row.subject_id,
            "data": row.data,
            "request_id": row.request_id,
            "previous_hash": previous,
        }
        entry["hash"] = previous = _hash(previous, entry)
        entries.append(entry)
    return entries


def entry_hash(entry: AuditEntry) -> bytes:
    """SHA-256 of the previous hash and the entry's canonical JSON."""
    return _hash(entry.previous_hash, {name: getattr(entry, name) for name in HASHED})


def _hash(previous_hash: bytes, values: Mapping[str, Any]) -> bytes:
    content = {
        "sequence": values["sequence"],
        "recordedAt": values["recorded_at"].astimezone(UTC).isoformat(),
        "action": values["action"],
        "actorId": str(values["actor_id"]) if values["actor_id"] else None,
        "subjectType": values["subject_type"],
        "subjectId": values["subject_id"],
        "data": values["data"],
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(previous_hash + canonical).digest()


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
