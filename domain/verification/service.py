"""Email and phone verification: send a six-digit code, confirm it.

A code is valid for `CODE_TTL`, allows `MAX_ATTEMPTS` wrong guesses, and proves only the
destination it was sent to. Asking again replaces the pending code, at most once per
`RESEND_COOLDOWN`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.audit import service as audit
from domain.audit.service import Fact
from domain.core.crypto import derive_key
from domain.core.db import Database, utcnow
from domain.core.encrypted import current_keyring
from domain.core.errors import Conflict, InvalidInput, RateLimited
from domain.notifications.outgoing import queue_message
from domain.operations.models import Operation
from domain.users.models import User
from domain.verification.models import Channel, VerificationCode

CODE_TTL = timedelta(minutes=15)
MAX_ATTEMPTS = 5
RESEND_COOLDOWN = timedelta(seconds=60)
KIND = {Channel.EMAIL: "user.email_verification", Channel.PHONE: "user.phone_verification"}
TEMPLATE = {Channel.EMAIL: "verification_code", Channel.PHONE: "phone_verification_code"}


def request_code(session: Session, user: User, channel: Channel, request_id: str | None = None) -> Operation:
    """Send a new code to the user's email or phone; return the delivery operation.

    Raises Conflict when already verified, InvalidInput when there is no phone number,
    RateLimited when the previous code was sent less than a minute ago. Queues an email
    (or SMS) whose operation the user can watch.
    """
    destination = _destination(user, channel)
    now = utcnow()
    pending = _pending(session, user.id, channel)
    if pending is not None and pending.created_at > now - RESEND_COOLDOWN:
        wait = int((pending.created_at + RESEND_COOLDOWN - now).total_seconds()) + 1
        raise RateLimited(f"a code was sent less than a minute ago; ask again in {wait} s", retry_after=wait)
    session.execute(
        update(VerificationCode)
        .where(VerificationCode.user_id == user.id, VerificationCode.channel == channel)
        .where(VerificationCode.consumed_at.is_(None))
        .values(consumed_at=now)
    )
    code = f"{secrets.randbelow(10**6):06d}"
    record = VerificationCode(id=uuid.uuid4(), user_id=user.id, channel=channel, attempts=0, created_at=now)
    record.code_hash = _digest(f"code:{record.id}:{code}")
    record.destination_hash = _digest(f"destination:{destination}")
    record.expires_at = now + CODE_TTL
    session.add(record)
    context = {"code": code, "minutes": int(CODE_TTL.total_seconds() // 60), "name": user.name or ""}
    return queue_message(
        session,
        owner=user,
        channel="email" if channel == Channel.EMAIL else "sms",
        recipient=destination,
        template=TEMPLATE[channel],
        context=context,
        kind=KIND[channel],
        request_id=request_id,
    )


def confirm_code(database: Database, user_id: uuid.UUID, channel: Channel, code: str) -> User:
    """Mark the user's email or phone verified if `code` is right; return the user.

    Runs in its own transaction so a wrong guess is counted even though it raises
    InvalidInput (wrong, expired, used up or no code pending; each says which).
    """
    with database.transaction() as session:
        user = session.get(User, user_id)
        record = _pending(session, user_id, channel, lock=True)
        if user is None or record is None:
            raise InvalidInput("no code is pending; ask for a new one")
        problem = _check(record, user, channel, code)
        if problem is None:
            record.consumed_at = utcnow()
            _mark_verified(user, channel)
            audit.record(session, Fact(f"user.{channel.value}_verified", "user", str(user.id), actor_id=str(user.id)))
            return user
    raise InvalidInput(problem)


def _check(record: VerificationCode, user: User, channel: Channel, code: str) -> str | None:
    """Why `code` does not verify (counting the attempt), or None when it does."""
    if record.expires_at <= utcnow():
        return "the code has expired; ask for a new one"
    if record.attempts >= MAX_ATTEMPTS:
        return "too many wrong codes; ask for a new one"
    if not hmac.compare_digest(record.destination_hash, _digest(f"destination:{_destination(user, channel)}")):
        return "the code was sent to a different address or number; ask for a new one"
    if not hmac.compare_digest(record.code_hash, _digest(f"code:{record.id}:{code}")):
        record.attempts += 1
        left = MAX_ATTEMPTS - record.attempts
        return f"the code is wrong; {left} attempts left" if left else "the code is wrong; ask for a new one"
    return None


def _pending(session: Session, user_id: uuid.UUID, channel: Channel, lock: bool = False) -> VerificationCode | None:
    query = (
        select(VerificationCode)
        .where(VerificationCode.user_id == user_id, VerificationCode.channel == channel)
        .where(VerificationCode.consumed_at.is_(None))
        .order_by(VerificationCode.created_at.desc())
        .limit(1)
    )
    return session.scalars(query.with_for_update() if lock else query).first()


def _destination(user: User, channel: Channel) -> str:
    if channel == Channel.EMAIL:
        if user.email_verified:
            raise Conflict("your email address is already verified")
        return str(user.email)
    if not user.phone:
        raise InvalidInput("add a phone number first (PATCH /users/me)")
    if user.phone_verified:
        raise Conflict("your phone number is already verified")
    return str(user.phone)


def _mark_verified(user: User, channel: Channel) -> None:
    if channel == Channel.EMAIL:
        user.email_verified = True
    else:
        user.phone_verified = True


def _digest(message: str) -> bytes:
    key = derive_key(current_keyring().service_key, "deepref:verification-code")
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
