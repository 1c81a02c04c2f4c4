"""How a reference moves: guarded status transitions, the links sent to referees, notices.

    pending → sent → opened → submitted → verified | flagged
    pending, sent, opened → declined | expired
    any but declined and expired → revoked

Every transition stages a `reference.updated` event for the candidate (sent after commit).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from domain.core.crypto import hash_token, new_token
from domain.core.db import utcnow
from domain.core.errors import Conflict, NotFound
from domain.notifications import service as notifications
from domain.notifications.models import Notification
from domain.notifications.outgoing import queue_message
from domain.notifications.providers import EmailProvider, SmsProvider
from domain.operations import routes
from domain.operations.dispatch import stage_event
from domain.operations.models import Operation
from domain.references import messages  # noqa: F401  (registers the templates)
from domain.references.models import AWAITING_REFEREE, Reference, ReferenceLink, ReferenceStatus

S = ReferenceStatus
EVENT = "reference.updated"
LINK_LIFETIME = timedelta(days=14)
# 32 random bytes: 256 bits, well over the 128 the links need.
TOKEN_BYTES = 32

ALLOWED: dict[ReferenceStatus, frozenset[ReferenceStatus]] = {
    S.PENDING: frozenset({S.SENT, S.OPENED, S.SUBMITTED, S.DECLINED, S.EXPIRED, S.REVOKED}),
    S.SENT: frozenset({S.OPENED, S.SUBMITTED, S.DECLINED, S.EXPIRED, S.REVOKED}),
    S.OPENED: frozenset({S.SUBMITTED, S.DECLINED, S.EXPIRED, S.REVOKED}),
    S.SUBMITTED: frozenset({S.VERIFIED, S.FLAGGED, S.REVOKED}),
    S.VERIFIED: frozenset({S.REVOKED}),
    S.FLAGGED: frozenset({S.REVOKED}),
    S.DECLINED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REVOKED: frozenset(),
}
# The timestamp each status sets.
STAMPS = {
    S.SENT: "sent_at",
    S.OPENED: "opened_at",
    S.SUBMITTED: "submitted_at",
    S.VERIFIED: "completed_at",
    S.FLAGGED: "completed_at",
    S.DECLINED: "closed_at",
    S.EXPIRED: "closed_at",
    S.REVOKED: "closed_at",
}
RELATIONSHIP_LABELS = {
    "manager": "manager",
    "peer": "peer",
    "direct_report": "direct report",
    "client": "client",
    "academic": "academic supervisor",
}


def transition(session: Session, reference: Reference, target: ReferenceStatus) -> None:
    """Move `reference` to `target`; raises Conflict naming the current status if it may not."""
    if target not in ALLOWED[reference.status]:
        raise Conflict(f"this reference is {reference.status.value}; it cannot become {target.value}")
    now = utcnow()
    reference.status = target
    setattr(reference, STAMPS[target], now)
    reference.updated_at = now
    stage_event(session, reference.candidate_id, EVENT, event_data(reference))


def event_data(reference: Reference) -> dict[str, Any]:
    """What a `reference.updated` event carries: state only, nothing personal."""
    return {
        "id": str(reference.id),
        "status": reference.status.value,
        "updatedAt": (reference.updated_at or utcnow()).isoformat(),
    }


@dataclass(frozen=True)
class Visitor:
    """Who made a request, as the server saw it (kept sealed, used for fraud signals)."""

    ip: str
    user_agent: str

    def seen(self, at: datetime) -> dict[str, str]:
        return {"at": at.isoformat(), "ip": self.ip, "userAgent": self.user_agent}


def send_link(
    session: Session, reference: Reference, *, template: str, link_base: str, request_id: str | None = None
) -> list[Operation]:
    """Make a new link for the referee and queue it on each of the reference's channels.

    The token exists only in the queued messages; the database keeps its hash.
    """
    token = new_token(TOKEN_BYTES)
    session.add(ReferenceLink(id=uuid.uuid4(), reference_id=reference.id, token_hash=hash_token(token)))
    referrer = reference.referrer
    candidate = reference.candidate
    context = {
        "candidate_name": candidate.name or "A DeepRef user",
        "referrer_name": referrer["name"],
        "relationship": RELATIONSHIP_LABELS[reference.relation.value],
        "link": f"{link_base.rstrip('/')}/referee/{token}",
        "expires_on": reference.expires_at.strftime("%d %B %Y"),
    }
    kind = "reference.request" if template == "reference_request" else "reference.reminder"
    channel_routes = {"email": routes.DELIVER_REFERENCE_EMAIL, "sms": routes.DELIVER_REFERENCE_SMS}
    contacts = {"email": referrer.get("email"), "sms": referrer.get("phone")}
    return [
        queue_message(
            session,
            owner=candidate,
            channel=channel,
            recipient=str(contacts[channel]),
            template=template,
            context=context,
            kind=kind,
            request_id=request_id,
            route=channel_routes[channel],
            payload={"reference_id": str(reference.id)},
        )
        for channel in ("email", "sms")
        if channel in reference.channels
    ]


def notify_candidate(session: Session, reference: Reference, template: str, **values: str) -> Operation | None:
    """Email the candidate about their reference (nothing if their address is gone)."""
    candidate = reference.candidate
    if not candidate.is_active or not candidate.email:
        return None
    context = {"candidate_name": candidate.name or "", "referrer_name": reference.referrer["name"], **values}
    return queue_message(
        session,
        owner=candidate,
        channel="email",
        recipient=str(candidate.email),
        template=template,
        context=context,
        kind=f"reference.notice.{template.removeprefix('reference_')}",
    )


def deliver_request(
    session: Session,
    reference_id: uuid.UUID,
    notification_id: uuid.UUID,
    *,
    email: EmailProvider,
    sms: SmsProvider,
) -> Notification:
    """Send a request or reminder to the referee; the first delivery marks the reference sent.

    Raises Conflict (nothing is sent) once the reference no longer awaits the referee, and
    whatever `notifications.deliver` raises.
    """
    reference = session.get(Reference, reference_id)
    if reference is None:
        raise NotFound("reference not found")
    if reference.status not in AWAITING_REFEREE:
        raise Conflict(f"this reference is {reference.status.value}; its link is no longer sent")
    sent = notifications.deliver(session, notification_id, email=email, sms=sms)
    # Locked only now: the referee must not wait on the mail server to open their link.
    session.refresh(reference, with_for_update=True)
    if reference.status == ReferenceStatus.PENDING:
        transition(session, reference, ReferenceStatus.SENT)
    return sent
