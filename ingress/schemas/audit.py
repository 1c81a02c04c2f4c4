"""The audit trail as administrators read it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from domain.audit.models import AuditEntry
from domain.audit.service import Verification
from ingress.schemas.common import PageQuery, ResponseModel


class AuditEntryOut(ResponseModel):
    sequence: int
    recorded_at: datetime
    action: str
    actor_id: uuid.UUID | None
    subject_type: str
    subject_id: str
    data: dict[str, Any]
    previous_hash: str = Field(description="hex SHA-256")
    hash: str = Field(description="hex SHA-256 of previousHash and this entry's canonical JSON")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        return cls(
            sequence=entry.sequence,
            recorded_at=entry.recorded_at,
            action=entry.action,
            actor_id=entry.actor_id,
            subject_type=entry.subject_type,
            subject_id=entry.subject_id,
            data=entry.data,
            previous_hash=entry.previous_hash.hex(),
            hash=entry.hash.hex(),
        )


class AuditPage(ResponseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class AuditQuery(PageQuery):
    action: str | None = Field(default=None, max_length=64)
    subject_type: str | None = Field(default=None, max_length=32)
    subject_id: str | None = Field(default=None, max_length=64)


class ChainHead(ResponseModel):
    sequence: int
    hash: str


class AuditVerification(ResponseModel):
    valid: bool
    entries: int = Field(description="entries checked before the first break (all of them when valid)")
    anchors: int
    broken_at: int | None = Field(description="sequence of the first entry or anchor that does not check out")
    reason: str | None
    head: ChainHead | None

    @classmethod
    def of(cls, result: Verification) -> AuditVerification:
        head = ChainHead(sequence=result.head.sequence, hash=result.head.hash.hex()) if result.head else None
        return cls(
            valid=result.valid,
            entries=result.entries,
            anchors=result.anchors,
            broken_at=result.broken_at,
            reason=result.reason,
            head=head,
        )
