"""Periodic work on references (run by beat): automatic reminders and expiry.

Both take rows `FOR UPDATE SKIP LOCKED` in batches, so overlapping runs share the work
instead of doing it twice, and each batch commits on its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from domain.audit import service as audit
from domain.audit.service import Fact
from domain.core.db import Database, utcnow
from domain.references import lifecycle
from domain.references.models import AWAITING_REFEREE, Reference, ReferenceStatus

# Automatic reminders, counted from the request: the first after 3 days, the second after 7.
AUTOMATIC_REMINDERS = (timedelta(days=3), timedelta(days=7))
# An automatic reminder waits at least this long after any earlier reminder.
REMINDER_GAP = timedelta(hours=24)
BATCH = 100


def send_automatic_reminders(database: Database, *, link_base: str, now: datetime | None = None) -> int:
    """Remind referees who have not answered after 3 and after 7 days; return how many were reminded."""
    now = now or utcnow()
    total = 0
    while True:
        with database.transaction() as session:
            due = _due_for_reminder(session, now)
            for reference in due:
                reference.automatic_reminders_sent += 1
                reference.last_reminder_at = now
                lifecycle.send_link(session, reference, template="reference_reminder", link_base=link_base)
        total += len(due)
        if len(due) < BATCH:
            return total


def _due_for_reminder(session: Session, now: datetime) -> list[Reference]:
    first, second = AUTOMATIC_REMINDERS
    due = or_(
        and_(Reference.automatic_reminders_sent == 0, Reference.created_at <= now - first),
        and_(Reference.automatic_reminders_sent == 1, Reference.created_at <= now - second),
    )
    quiet = or_(Reference.last_reminder_at.is_(None), Reference.last_reminder_at <= now - REMINDER_GAP)
    query = (
        select(Reference)
        .where(Reference.status.in_((ReferenceStatus.SENT, ReferenceStatus.OPENED)), Reference.expires_at > now)
        .where(due, quiet)
        .order_by(Reference.created_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def expire_overdue(database: Database, *, now: datetime | None = None) -> int:
    """Expire requests not answered in time and tell their candidates; return how many expired."""
    now = now or utcnow()
    days = str(lifecycle.LINK_LIFETIME.days)
    total = 0
    while True:
        with database.transaction() as session:
            query = (
                select(Reference)
                .where(Reference.status.in_(AWAITING_REFEREE), Reference.expires_at <= now)
                .order_by(Reference.expires_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            overdue = list(session.scalars(query))
            for reference in overdue:
                lifecycle.transition(session, reference, ReferenceStatus.EXPIRED)
                audit.record(session, Fact("reference.expired", "reference", str(reference.id)))
                lifecycle.notify_candidate(session, reference, "reference_expired", days=days)
        total += len(overdue)
        if len(overdue) < BATCH:
            return total
