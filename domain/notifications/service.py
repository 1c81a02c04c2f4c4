"""Compose notifications and deliver each one exactly once.

Composing renders a template and stores the sealed message in the caller's transaction
(next to the operation and outbox rows). Delivering locks the row, hands the message to
the provider and records the outcome; a delivery repeated after success sends nothing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.core.crypto import DecryptionError
from domain.core.db import utcnow
from domain.core.errors import InvalidInput, NotFound
from domain.notifications.models import Channel, Notification, NotificationStatus
from domain.notifications.providers import (
    DeliveryError,
    Email,
    EmailProvider,
    PermanentDeliveryError,
    SmsProvider,
    TransientDeliveryError,
)
from domain.notifications.templates import render
from domain.users.models import User

log = logging.getLogger(__name__)

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def compose(
    session: Session,
    *,
    owner: User,
    channel: Channel | Literal["email", "sms"],
    recipient: str,
    template: str,
    context: Mapping[str, Any],
    operation_id: uuid.UUID | None = None,
) -> Notification:
    """Render `template` for `channel` and store it, sealed with `owner`'s data key, as pending.

    With an `operation_id`, composing again for the same operation returns the stored
    notification unchanged (a redelivered task must not write a second message).
    Raises InvalidInput for a malformed email address or phone number, TemplateError
    for an unknown template or a missing value.
    """
    if operation_id is not None:
        existing = _for_operation(session, operation_id)
        if existing is not None:
            return existing
    channel = Channel(channel)
    address = normalise_recipient(channel, recipient)
    rendered = render(template, channel, context)
    notification = Notification(
        owner=owner,
        channel=channel,
        template=template,
        operation_id=operation_id,
        recipient=address,
        subject=rendered.subject,
        body_text=rendered.text,
        body_html=rendered.html,
    )
    if operation_id is None:
        session.add(notification)  # written with the caller's transaction
    else:
        notification = _add_once(session, notification, operation_id)
    log.info(
        "notification composed",
        extra={"notification_id": str(notification.id), "channel": channel.value, "template": template},
    )
    return notification


def _add_once(session: Session, notification: Notification, operation_id: uuid.UUID) -> Notification:
    """Store the operation's notification now, unless a concurrent delivery of its task already did."""
    try:
        with session.begin_nested():
            session.add(notification)
            session.flush()
    except IntegrityError:
        # Another delivery of the same task stored it first (the savepoint dropped our copy).
        existing = _for_operation(session, operation_id)
        if existing is not None:
            return existing
        raise
    return notification


def normalise_recipient(channel: Channel, recipient: str) -> str:
    """Check an email address or an E.164 phone number and return it in canonical form.

    Raises InvalidInput (naming the field, never echoing the value) when it is malformed.
    """
    if channel is Channel.SMS:
        phone = _PHONE_PUNCTUATION.sub("", recipient)
        if not _E164.fullmatch(phone):
            raise InvalidInput(
                "phone: not a phone number in international format (+ and country code)",
                details=[{"field": "phone", "problem": "invalid"}],
            )
        return phone
    try:
        return validate_email(recipient.strip(), check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidInput(
            "email: not a valid email address", details=[{"field": "email", "problem": "invalid"}]
        ) from None


def deliver(session: Session, notification_id: uuid.UUID, *, email: EmailProvider, sms: SmsProvider) -> Notification:
    """Send the notification unless it was already sent; return it with status sent.

    The row stays locked (SELECT … FOR UPDATE) until the caller's transaction ends, so
    concurrent deliveries of the same notification send it once. A notification already
    sent is returned unchanged without sending.

    Raises NotFound for an unknown id. Raises PermanentDeliveryError when the provider
    refuses the message for good, now (status becomes failed) or on an earlier attempt
    (nothing is sent), and TransientDeliveryError when it may work later (status stays
    pending). Before either is raised, `attempts`, `last_error` and the status are set
    and flushed: the caller must commit, not roll back, to keep them. A rollback loses
    only that bookkeeping; nothing was sent, and the row stays pending.
    """
    notification = session.execute(
        select(Notification)
        .where(Notification.id == notification_id)
        .with_for_update(of=Notification)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if notification is None:
        raise NotFound("notification not found")
    if notification.status == NotificationStatus.SENT:
        return notification
    if notification.status == NotificationStatus.FAILED:
        raise PermanentDeliveryError(notification.last_error or "delivery failed permanently")
    notification.attempts += 1
    try:
        provider_id = _send(notification, email, sms)
    except DeliveryError as exc:
        _record_failure(session, notification, exc)
        raise
    notification.status = NotificationStatus.SENT
    notification.provider_message_id = provider_id[:255]
    notification.sent_at = utcnow()
    notification.last_error = None
    session.flush()
    log.info("notification sent", extra=_log_fields(notification))
    return notification


def _send(notification: Notification, email: EmailProvider, sms: SmsProvider) -> str:
    try:
        recipient, text = notification.recipient, notification.body_text
        subject, html = notification.subject, notification.body_html
    except DecryptionError:
        # The owner was erased (or the row altered): there is nothing left to send, ever.
        raise PermanentDeliveryError("message unreadable: owner erased or data altered") from None
    # The id keeps the Message-ID and the outbox file name stable across retries.
    key = str(notification.id)
    if notification.channel == Channel.SMS:
        return sms.send(recipient, text, idempotency_key=key)
    return email.send(Email(to=recipient, subject=subject or "", text=text, html=html, idempotency_key=key))


def _record_failure(session: Session, notification: Notification, error: DeliveryError) -> None:
    notification.last_error = str(error)[:255] or type(error).__name__
    if isinstance(error, PermanentDeliveryError):
        notification.status = NotificationStatus.FAILED
    session.flush()
    level = logging.WARNING if isinstance(error, TransientDeliveryError) else logging.ERROR
    log.log(level, "notification not sent", extra={**_log_fields(notification), "error": notification.last_error})


def _log_fields(notification: Notification) -> dict[str, Any]:
    # Ids and counters only: never the recipient, the subject or the body.
    return {
        "notification_id": str(notification.id),
        "operation_id": str(notification.operation_id) if notification.operation_id else None,
        "channel": notification.channel.value,
        "template": notification.template,
        "attempts": notification.attempts,
        "status": notification.status.value,
        "provider_message_id": notification.provider_message_id,
    }


def _for_operation(session: Session, operation_id: uuid.UUID) -> Notification | None:
    return session.execute(select(Notification).where(Notification.operation_id == operation_id)).scalar_one_or_none()
