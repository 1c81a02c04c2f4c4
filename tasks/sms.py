"""The `sms` queue: delivering text messages."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from domain.notifications import service as notifications
from domain.operations.models import Operation
from domain.references import lifecycle
from tasks.app import app
from tasks.base import OperationTask
from tasks.runtime import runtime


@app.task(base=OperationTask, name="tasks.sms.deliver_notification")
def deliver_notification(session: Session, operation: Operation, notification_id: str) -> dict[str, Any]:
    rt = runtime()
    sent = notifications.deliver(session, uuid.UUID(notification_id), email=rt.email, sms=rt.sms)
    return {"notificationId": str(sent.id), "status": sent.status.value}


@app.task(base=OperationTask, name="tasks.sms.deliver_reference_request")
def deliver_reference_request(
    session: Session, operation: Operation, notification_id: str, reference_id: str
) -> dict[str, Any]:
    rt = runtime()
    sent = lifecycle.deliver_request(
        session, uuid.UUID(reference_id), uuid.UUID(notification_id), email=rt.email, sms=rt.sms
    )
    return {"notificationId": str(sent.id), "status": sent.status.value, "referenceId": reference_id}
