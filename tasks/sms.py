"""The `sms` queue: delivering text messages."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from domain.operations.models import Operation
from tasks import delivery
from tasks.app import app
from tasks.base import OperationTask


@app.task(base=OperationTask, name="tasks.sms.deliver_notification")
def deliver_notification(session: Session, operation: Operation, notification_id: str) -> dict[str, Any]:
    return delivery.send_notification(session, notification_id)


@app.task(base=OperationTask, name="tasks.sms.deliver_reference_request")
def deliver_reference_request(
    session: Session, operation: Operation, notification_id: str, reference_id: str
) -> dict[str, Any]:
    return delivery.send_reference_request(session, notification_id, reference_id)
