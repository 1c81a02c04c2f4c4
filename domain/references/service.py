"""What a candidate does with references: request, follow, remind, revoke (sharing: sharing.py).

And what others may see of them: an employer reads only what was shared with them, a
registered referrer lists the requests addressed to their verified email address.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from sqlalchemy import Select, false, func, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from domain.audit import service as audit
from domain.audit.service import Fact
from domain.core.crypto import normalise_email
from domain.core.db import utcnow
from domain.core.encrypted import current_keyring
from domain.core.errors import Conflict, InvalidInput, NotFound, RateLimited
from domain.core.pagination import Page, newest_first
from domain.jobs.models import Job, JobStatus
from domain.notifications.models import Channel as NotificationChannel
from domain.notifications.service import normalise_recipient
from domain.operations.dispatch import stage_event
from domain.operations.models import Operation
from domain.references import lifecycle
from domain.references.lifecycle import LINK_LIFETIME, Visitor
from domain.references.models import (
    AWAITING_REFEREE,
    COMPLETED,
    Reference,
    ReferenceShare,
    ReferenceStatus,
    Relationship,
)
from domain.references.questionnaires import CustomQuestion, questions_for
from domain.users.models import Role, User

MAX_OPEN_REQUESTS = 10
Audience = Literal["candidate", "employer", "referrer"]
# Sent to an employer when a reference becomes (or stops being) readable to them.
SHARED_EVENT = "reference.shared"
REMINDER_INTERVAL = timedelta(hours=24)
MAX_REMINDERS = 3


@dataclass(frozen=True)
class ReferenceRequest:
    """A candidate's request for a reference, as validated by the API."""

    referrer_name: str
    relationship: Relationship
    referrer_email: str | None = None
    referrer_phone: str | None = None
    channels: tuple[str, ...] | None = None
    job_id: uuid.UUID | None = None
    custom_questions: list[CustomQuestion] = field(default_factory=list)


def request_reference(
    session: Session, candidate: User, draft: ReferenceRequest, visitor: Visitor, *, link_base: str
) -> tuple[Reference, list[Operation]]:
    """Create a reference request and queue the link to the referrer on each channel.

    The request itself records the candidate's consent to contact the referrer (time, IP,
    user agent). Raises InvalidInput for the referrer being the candidate, a channel without
    its contact, a `job_id` that is not a published job, or more than MAX_OPEN_REQUESTS
    awaiting an answer. Audited.
    """
    # One request at a time per candidate, so the open-request limit holds under concurrency
    # (NO KEY UPDATE: rows that merely reference the user are not held up).
    session.execute(select(User.id).where(User.id == candidate.id).with_for_update(key_share=True))
    email, phone, channels = _contacts(candidate, draft)
    _check_job(session, draft.job_id)
    _check_open_requests(session, candidate)
    questionnaire, questions = questions_for(draft.relationship, draft.custom_questions)
    now = utcnow()
    keyring = current_keyring()
    reference = Reference(
        candidate=candidate,
        status=ReferenceStatus.PENDING,
        relation=draft.relationship,
        job_id=draft.job_id,
        questionnaire=questionnaire.name,
        questionnaire_version=questionnaire.version,
        channels=list(channels),
        referrer_email_index=keyring.email_index(email) if email else None,
        referrer_phone_index=phone_index(phone) if phone else None,
        referrer={"name": draft.referrer_name, "email": email, "phone": phone},
        request={"questions": [q.to_json() for q in questions], "consent": visitor.seen(now)},
        consent_at=now,
        created_at=now,
        updated_at=now,
        expires_at=now + LINK_LIFETIME,
    )
    session.add(reference)
    operations = lifecycle.send_link(session, reference, template="reference_request", link_base=link_base)
    audit.record(
        session,
        Fact(
            "reference.requested",
            "reference",
            str(reference.id),
            actor_id=str(candidate.id),
            data={"relationship": draft.relationship.value, "channels": ",".join(channels)},
        ),
    )
    stage_event(session, candidate.id, lifecycle.EVENT, lifecycle.event_data(reference))
    return reference, operations


def phone_index(phone: str) -> bytes:
    """Keyed hash of an E.164 number (the email blind-index key, in a separate namespace)."""
    return current_keyring().email_index(f"tel:{phone}")


def _contacts(candidate: User, draft: ReferenceRequest) -> tuple[str | None, str | None, tuple[str, ...]]:
    email = normalise_recipient(NotificationChannel.EMAIL, draft.referrer_email) if draft.referrer_email else None
    phone = normalise_recipient(NotificationChannel.SMS, draft.referrer_phone) if draft.referrer_phone else None
    if email and candidate.email and normalise_email(email) == normalise_email(str(candidate.email)):
        raise _invalid("referrer.email", "the referrer cannot be you: this is your own email address")
    if phone and candidate.phone and phone == candidate.phone:
        raise _invalid("referrer.phone", "the referrer cannot be you: this is your own phone number")
    reachable = tuple(c for c, contact in (("email", email), ("sms", phone)) if contact)
    channels = draft.channels if draft.channels is not None else reachable
    if not reachable or not channels:
        raise _invalid("channels", "no channel reaches the referrer: give their email address or phone number")
    for channel in channels:
        if channel not in reachable:
            needed = "referrer.email" if channel == "email" else "referrer.phone"
            raise _invalid("channels", f"channel {channel} needs {needed}")
    return email, phone, channels


def _check_job(session: Session, job_id: uuid.UUID | None) -> None:
    if job_id is None:
        return
    job = session.get(Job, job_id)
    if job is None or job.deleted_at is not None or job.status != JobStatus.PUBLISHED:
        raise _invalid("jobId", "no published job has this id")


def _check_open_requests(session: Session, candidate: User) -> None:
    open_requests = session.scalar(
        select(func.count())
        .select_from(Reference)
        .where(Reference.candidate_id == candidate.id, Reference.status.in_(AWAITING_REFEREE))
    )
    if (open_requests or 0) >= MAX_OPEN_REQUESTS:
        raise InvalidInput(
            f"you already have {MAX_OPEN_REQUESTS} requests awaiting an answer; "
            "wait for one to be answered or revoke one"
        )


def _invalid(field_name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field_name}: {message}", details=[{"field": field_name, "message": message}])


def own_reference(session: Session, candidate: User, reference_id: uuid.UUID, *, lock: bool = False) -> Reference:
    """The candidate's reference; raises NotFound for anyone else's."""
    reference = session.get(Reference, reference_id, with_for_update=lock)
    if reference is None or reference.candidate_id != candidate.id:
        raise NotFound("reference not found")
    return reference


def send_reminder(session: Session, candidate: User, reference_id: uuid.UUID, *, link_base: str) -> list[Operation]:
    """Send the referee a reminder with a fresh link; return the delivery operations.

    Raises Conflict unless the reference awaits the referee or after MAX_REMINDERS, and
    RateLimited (with the wait) within REMINDER_INTERVAL of the previous reminder.
    """
    reference = own_reference(session, candidate, reference_id, lock=True)
    if reference.status not in (ReferenceStatus.SENT, ReferenceStatus.OPENED):
        raise Conflict(
            f"this reference is {reference.status.value}; only a delivered request awaiting its answer can be reminded"
        )
    now = utcnow()
    if reference.expires_at <= now:
        raise Conflict("this request has expired; its link no longer works")
    if reference.reminders_sent >= MAX_REMINDERS:
        raise Conflict(f"all {MAX_REMINDERS} reminders have been sent for this reference")
    if reference.last_reminder_at is not None and reference.last_reminder_at > now - REMINDER_INTERVAL:
        wait = int((reference.last_reminder_at + REMINDER_INTERVAL - now).total_seconds()) + 1
        raise RateLimited(f"a reminder was sent less than 24 hours ago; try again in {wait} s", retry_after=wait)
    reference.reminders_sent += 1
    reference.last_reminder_at = now
    return lifecycle.send_link(session, reference, template="reference_reminder", link_base=link_base)


def revoke(session: Session, candidate: User, reference_id: uuid.UUID) -> Reference:
    """Withdraw a reference: its links stop working and employers no longer see it. Audited.

    Each employer it was shared with gets a `reference.shared` event with `"shared": false`.
    """
    reference = own_reference(session, candidate, reference_id, lock=True)
    lifecycle.transition(session, reference, ReferenceStatus.REVOKED)
    shared_with = session.scalars(
        select(ReferenceShare.employer_id).where(
            ReferenceShare.reference_id == reference.id, ReferenceShare.revoked_at.is_(None)
        )
    )
    for employer_id in shared_with:
        stage_event(session, employer_id, SHARED_EVENT, {"referenceId": str(reference.id), "shared": False})
    audit.record(session, Fact("reference.revoked", "reference", str(reference.id), actor_id=str(candidate.id)))
    return reference


def visible_reference(session: Session, viewer: User, reference_id: uuid.UUID) -> Reference:
    """A reference the viewer may read; raises NotFound for any other.

    Candidates read their own; employers what is shared with them, completed and not revoked;
    referrers the requests addressed to their verified email address.
    """
    query = _visible_to(viewer).where(Reference.id == reference_id)
    reference = session.scalars(query).first()
    if reference is None:
        raise NotFound("reference not found")
    return reference


def list_references(
    session: Session, viewer: User, *, status: ReferenceStatus | None, cursor: str | None, limit: int
) -> Page[Reference]:
    """The references the viewer may read, newest first, keyset-paginated."""
    query = _visible_to(viewer)
    if status is not None:
        query = query.where(Reference.status == status)
    own = _sees_only_own(viewer)
    if not own:
        query = query.options(selectinload(Reference.candidate))
    page = newest_first(session, query, (Reference.created_at, Reference.id), cursor=cursor, limit=limit)
    if own:  # every item is the viewer's own: no second query for the candidate
        for reference in page.items:
            set_committed_value(reference, "candidate", viewer)
    return page


def _sees_only_own(viewer: User) -> bool:
    """Employers see what is shared with them, referrers what is addressed to them; others their own."""
    return viewer.role not in (Role.EMPLOYER, Role.REFERRER)


def _visible_to(viewer: User) -> Select[Reference]:
    query = select(Reference)
    if _sees_only_own(viewer):
        return query.where(Reference.candidate_id == viewer.id)
    if viewer.role == Role.EMPLOYER:
        shared = select(ReferenceShare.reference_id).where(
            ReferenceShare.employer_id == viewer.id, ReferenceShare.revoked_at.is_(None)
        )
        return query.where(Reference.id.in_(shared), Reference.status.in_(COMPLETED))
    if not viewer.email_verified:  # a referrer
        return query.where(false())
    return query.where(Reference.referrer_email_index == viewer.email_index)


def audience_of(reference: Reference, viewer: User) -> Audience:
    """Which view of a reference the viewer gets (they must be allowed to see it at all)."""
    if reference.candidate_id == viewer.id:
        return "candidate"
    return "employer" if viewer.role == Role.EMPLOYER else "referrer"
