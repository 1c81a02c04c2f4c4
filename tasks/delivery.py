"""What the `email` and `sms` queues do alike: hand a composed message to its provider.

Each queue registers its own tasks (one task name per queue); both call these.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from domain.notifications import service as notifications
from domain.references import lifecycle
from tasks.runtime import runtime


def send_notification(session: Session, notification_id: str) -> dict[str, Any]:
    rt = runtime()
    sent = notifications.deliver(session, uuid.UUID(notification_id), email=rt.email, sms=rt.sms)
    return {"notificationId": str(sent.id), "status": sent.status.value}


def send_reference_request(session: Session, notification_id: str, reference_id: str) -> dict[str, Any]:
    rt = runtime()
    sent = lifecycle.deliver_request(
        session, uuid.UUID(reference_id), uuid.UUID(notification_id), email=rt.email, sms=rt.sms
    )
    return {"notificationId": str(sent.id), "status": sent.status.value, "referenceId": reference_id}
