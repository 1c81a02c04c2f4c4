"""Telling the administrators that an operation is dead, through the email queue."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.notifications.outgoing import queue_message
from domain.operations.models import Operation
from domain.users.models import Role, User, UserStatus

logger = logging.getLogger(__name__)

ALERT_KIND = "admin.alert"


def alert_admins(session: Session, dead: Operation) -> int:
    """Queue an `operation_dead` email to every active administrator; return how many.

    An alert that itself dies raises no further alert (that would loop); it is logged.
    """
    if dead.kind == ALERT_KIND:
        logger.error("admin alert %s is dead; not alerting about it", dead.id)
        return 0
    admins = session.scalars(select(User).where(User.role == Role.ADMIN, User.status == UserStatus.ACTIVE))
    count = 0
    for admin in admins:
        queue_message(
            session,
            owner=admin,
            channel="email",
            recipient=admin.email,
            template="operation_dead",
            context={
                "operation_id": str(dead.id),
                "kind": dead.kind,
                "error_code": dead.error_code or "unknown",
                "attempts": dead.attempts,
            },
            kind=ALERT_KIND,
        )
        count += 1
    if count == 0:
        logger.error("operation %s is dead and there is no administrator to alert", dead.id)
    return count
