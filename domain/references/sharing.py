"""Sharing a completed reference with employers, and taking it back."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.audit import service as audit
from domain.audit.service import Fact
from domain.core.db import utcnow
from domain.core.errors import Conflict, InvalidInput, NotFound
from domain.operations.dispatch import stage_event
from domain.references.models import COMPLETED, Reference, ReferenceShare
from domain.references.service import SHARED_EVENT, own_reference
from domain.users import service as users
from domain.users.models import Role, User


def share(
    session: Session,
    candidate: User,
    reference_id: uuid.UUID,
    *,
    employer_id: uuid.UUID | None = None,
    employer_email: str | None = None,
) -> tuple[ReferenceShare, bool]:
    """Let one employer read a verified or flagged reference; return the share and whether it is new.

    Sharing again is harmless (the existing share comes back). Raises Conflict for a
    reference not yet completed (or revoked), InvalidInput when no active employer has that
    id or email. The employer gets a `reference.shared` event. Audited.
    """
    reference = own_reference(session, candidate, reference_id, lock=True)
    if reference.status not in COMPLETED:
        raise Conflict(
            f"this reference is {reference.status.value}; only a verified or flagged reference can be shared"
        )
    employer = _employer(session, employer_id, employer_email)
    existing = session.scalars(
        select(ReferenceShare).where(
            ReferenceShare.reference_id == reference.id, ReferenceShare.employer_id == employer.id
        )
    ).first()
    if existing is not None and existing.revoked_at is None:
        return existing, False
    now = utcnow()
    if existing is None:
        existing = ReferenceShare(id=uuid.uuid4(), reference_id=reference.id, employer_id=employer.id, created_at=now)
        session.add(existing)
    else:
        existing.created_at, existing.revoked_at = now, None
    stage_event(session, employer.id, SHARED_EVENT, {"referenceId": str(reference.id), "shared": True})
    _audit(session, "reference.shared", reference, candidate, employer.id)
    return existing, True


def unshare(session: Session, candidate: User, reference_id: uuid.UUID, employer_id: uuid.UUID) -> None:
    """Stop sharing a reference with an employer; raises NotFound when it is not shared with them. Audited."""
    reference = own_reference(session, candidate, reference_id, lock=True)
    existing = session.scalars(
        select(ReferenceShare)
        .where(ReferenceShare.reference_id == reference.id, ReferenceShare.employer_id == employer_id)
        .where(ReferenceShare.revoked_at.is_(None))
    ).first()
    if existing is None:
        raise NotFound("this reference is not shared with that employer")
    existing.revoked_at = utcnow()
    stage_event(session, employer_id, SHARED_EVENT, {"referenceId": str(reference.id), "shared": False})
    _audit(session, "reference.unshared", reference, candidate, employer_id)


def active_shares(session: Session, reference: Reference) -> list[tuple[ReferenceShare, User]]:
    """Who a reference is shared with now, oldest share first, with each employer's account."""
    rows = session.execute(
        select(ReferenceShare, User)
        .join(User, User.id == ReferenceShare.employer_id)
        .where(ReferenceShare.reference_id == reference.id, ReferenceShare.revoked_at.is_(None))
        .order_by(ReferenceShare.created_at, ReferenceShare.id)
    )
    return [(share_row, employer) for share_row, employer in rows.all()]


def _employer(session: Session, employer_id: uuid.UUID | None, employer_email: str | None) -> User:
    employer = session.get(User, employer_id) if employer_id else users.find_by_email(session, employer_email or "")
    if employer is None or employer.role != Role.EMPLOYER or not employer.is_active:
        field_name = "employerId" if employer_id else "employerEmail"
        message = "no active employer is registered with this " + ("id" if employer_id else "email address")
        raise InvalidInput(f"{field_name}: {message}", details=[{"field": field_name, "message": message}])
    return employer


def _audit(session: Session, action: str, reference: Reference, candidate: User, employer_id: uuid.UUID) -> None:
    fact = Fact(
        action, "reference", str(reference.id), actor_id=str(candidate.id), data={"employerId": str(employer_id)}
    )
    audit.record(session, fact)
