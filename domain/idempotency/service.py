"""Claim, complete and replay Idempotency-Key records.

Each step runs in its own short transaction, so a second request with the same key sees
the first one as in progress while it runs.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from domain.core.crypto import open_sealed, seal
from domain.core.db import Database, utcnow
from domain.core.encrypted import current_keyring
from domain.core.errors import Conflict, InvalidInput
from domain.idempotency.models import IdempotencyKey, IdempotencyState

RETENTION = timedelta(hours=24)
# A claim older than this belongs to a request that died; the key may be used again.
ABANDONED_AFTER = timedelta(minutes=2)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Claimed:
    record_id: uuid.UUID


@dataclass(frozen=True)
class Replay:
    status: int
    headers: dict[str, str]
    body: bytes


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(b"\n".join((method.encode(), path.encode(), body))).digest()


def claim(db: Database, scope: str, key: str, request_hash: bytes) -> Claimed | Replay:
    """Claim `key` for this request, or return the stored response of the first one.

    Raises InvalidInput when the key was used with another request, Conflict while the
    first request with the key is still running.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
    with db.transaction() as session:
        now = utcnow()
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
                (IdempotencyKey.expires_at < now)
                | (
                    (IdempotencyKey.state == IdempotencyState.IN_PROGRESS)
                    & (IdempotencyKey.created_at < now - ABANDONED_AFTER)
                ),
            )
        )
        record_id = uuid.uuid4()
        inserted = session.execute(
            insert(IdempotencyKey)
            .values(
                id=record_id,
                scope=scope,
                key=key,
                request_hash=request_hash,
                state=IdempotencyState.IN_PROGRESS,
                created_at=now,
                expires_at=now + RETENTION,
            )
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(IdempotencyKey.id)
        ).scalar_one_or_none()
        if inserted is not None:
            return Claimed(record_id)
        existing = session.execute(
            select(IdempotencyKey).where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
        ).scalar_one()
        return _replay_of(existing, request_hash)


def _replay_of(record: IdempotencyKey, request_hash: bytes) -> Replay:
    if record.request_hash != request_hash:
        raise InvalidInput("Idempotency-Key was already used with a different request")
    if record.state == IdempotencyState.IN_PROGRESS or record.response_body is None:
        raise Conflict("a request with this Idempotency-Key is still being processed")
    body = open_sealed(current_keyring().service_key, record.response_body, record.id.bytes)
    return Replay(status=record.response_status or 200, headers=dict(record.response_headers or {}), body=body)


def complete(db: Database, record_id: uuid.UUID, status: int, headers: dict[str, str], body: bytes) -> None:
    """Store the response so that repeats replay it byte for byte, in a transaction of its own."""
    with db.transaction() as session:
        record_response(session, record_id, status, headers, body)


def record_response(session: Session, record_id: uuid.UUID, status: int, headers: dict[str, str], body: bytes) -> None:
    """Store the response in `session`'s transaction: given the request's own, the work and the
    response it replays are committed together or not at all."""
    record = session.get(IdempotencyKey, record_id)
    if record is None:  # pruned or taken over meanwhile: nothing to replay
        return
    record.state = IdempotencyState.COMPLETED
    record.response_status = status
    record.response_headers = headers
    record.response_body = seal(current_keyring().service_key, body, record_id.bytes)


def release(db: Database, record_id: uuid.UUID) -> None:
    """Forget a claim whose request failed, so the client may retry with the same key."""
    with db.transaction() as session:
        session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == record_id))


def prune_expired(db: Database) -> int:
    """Delete records past their retention; returns how many were deleted."""
    with db.transaction() as session:
        result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < utcnow()))
        return int(getattr(result, "rowcount", 0) or 0)
