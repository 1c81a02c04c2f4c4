"""Queueing a message for delivery: the notification row plus the operation that sends it."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from domain.notifications import service as notifications
from domain.operations import routes
from domain.operations import service as operations
from domain.operations.models import Operation
from domain.operations.routes import TaskRoute
from domain.users.models import User

ROUTES = {"email": routes.DELIVER_EMAIL, "sms": routes.DELIVER_SMS}


def queue_message(
    session: Session,
    *,
    owner: User,
    channel: Literal["email", "sms"],
    recipient: str,
    template: str,
    context: dict[str, Any],
    kind: str,
    request_id: str | None = None,
    route: TaskRoute | None = None,
    payload: dict[str, str] | None = None,
) -> Operation:
    """Render `template` for `recipient` and queue its delivery on the channel's queue.

    Everything is written in the caller's transaction; the task is published after commit.
    The operation is owned by `owner`, who sees its progress (`operation.updated` events).
    A `route` other than the channel's plain delivery task (one that also records what the
    message was for) gets `payload` (ids) besides the notification id.
    """
    notification = notifications.compose(
        session, owner=owner, channel=channel, recipient=recipient, template=template, context=context
    )
    operation = operations.enqueue(
        session,
        owner_id=owner.id,
        kind=kind,
        route=route or ROUTES[channel],
        payload={**(payload or {}), "notification_id": str(notification.id)},
        request_id=request_id,
    )
    notification.operation_id = operation.id
    return operation
