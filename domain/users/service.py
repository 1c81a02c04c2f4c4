"""Account operations: registration, login, tokens, MFA, profile and administration."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from domain.audit import service as audit
from domain.audit.service import Fact, Scalar
from domain.core.config import Settings
from domain.core.crypto import hash_token
from domain.core.encrypted import current_keyring
from domain.core.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from domain.core.pagination import DEFAULT_LIMIT, Page, newest_first
from domain.users import mfa
from domain.users.cache import UserCache
from domain.users.models import SELF_SERVICE_ROLES, RefreshToken, Role, User, UserStatus
from domain.users.passwords import Offload, PasswordHasher, in_place, password_problem
from domain.users.tokens import (
    AccessTokens,
    TokenPair,
    consume_refresh_token,
    issue_refresh_token,
    revoke_all_for_user,
    revoke_family,
)

GENERIC_LOGIN_FAILURE = "email or password is incorrect"


@dataclass(frozen=True)
class Accounts:
    """What account operations need from configuration, built once per process."""

    hasher: PasswordHasher
    access_tokens: AccessTokens
    refresh_ttl: int

    @classmethod
    def from_settings(cls, settings: Settings, offload: Offload | None = None) -> Accounts:
        """Accounts per the settings; `offload` runs password hashing off the caller's event loop."""
        return cls(
            hasher=PasswordHasher(settings.bcrypt_rounds, offload or in_place),
            access_tokens=AccessTokens(
                settings.secret_key, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl
            ),
            refresh_ttl=settings.refresh_token_ttl,
        )

    def issue_tokens(self, session: Session, user: User) -> TokenPair:
        """Start a new login session: an access token and a refresh token of a new family."""
        return TokenPair(
            access_token=self.access_tokens.issue(user.id),
            refresh_token=issue_refresh_token(session, user, self.refresh_ttl),
            expires_in=self.access_tokens.ttl_seconds,
        )


def find_by_email(session: Session, email: str) -> User | None:
    index = current_keyring().email_index(email)
    return session.execute(select(User).where(User.email_index == index)).scalar_one_or_none()


def register(
    session: Session, accounts: Accounts, *, email: str, password: str, role: Role, name: str
) -> tuple[User, TokenPair]:
    """Create an account and log it in.

    Raises InvalidInput for the admin role or a weak/too-long password, Conflict when the
    email is already registered.
    """
    if role not in SELF_SERVICE_ROLES:
        raise InvalidInput("role: admins are created by an administrator", details=[_field("role", "not allowed")])
    return _create_user(session, accounts, email=email, password=password, role=role, name=name)


def create_admin(session: Session, accounts: Accounts, *, email: str, password: str, name: str) -> User:
    """Create an administrator (only from the `deepref create-admin` command)."""
    user, _ = _create_user(session, accounts, email=email, password=password, role=Role.ADMIN, name=name)
    return user


def _create_user(
    session: Session, accounts: Accounts, *, email: str, password: str, role: Role, name: str
) -> tuple[User, TokenPair]:
    problem = password_problem(password)
    if problem:
        raise InvalidInput(f"password: {problem}", details=[_field("password", problem)])
    index = current_keyring().email_index(email)
    user = User(email_index=index, email=email.strip(), name=name.strip(), role=role)
    user.password_hash = accounts.hasher.hash(password)
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("email: an account with this email already exists") from exc
    return user, accounts.issue_tokens(session, user)


def login(
    session: Session, accounts: Accounts, *, email: str, password: str, mfa_code: str | None
) -> tuple[User, TokenPair]:
    """Check credentials (and the TOTP code when MFA is on) and start a session.

    Raises AuthenticationFailed with one message for an unknown email, a wrong password
    and a suspended account, after the same bcrypt work in each case.
    """
    user = find_by_email(session, email)
    matched = accounts.hasher.verify(password, user.password_hash if user else None)
    if user is None or not matched or not user.is_active:
        raise AuthenticationFailed(GENERIC_LOGIN_FAILURE)
    if user.mfa_enabled:
        if not mfa_code:
            raise AuthenticationFailed("mfaCode: a one-time code is required", details=[_field("mfaCode", "required")])
        if not mfa.accept_code(user, mfa_code):
            raise AuthenticationFailed("mfaCode: the one-time code is not valid")
    return user, accounts.issue_tokens(session, user)


def refresh(session: Session, accounts: Accounts, refresh_token: str) -> tuple[User, TokenPair]:
    """Rotate a refresh token: the old one is spent, a new one of the same family is issued."""
    record, user = consume_refresh_token(session, refresh_token)
    if not user.is_active:
        raise AuthenticationFailed("refresh token is invalid")
    pair = TokenPair(
        access_token=accounts.access_tokens.issue(user.id),
        refresh_token=issue_refresh_token(session, user, accounts.refresh_ttl, family_id=record.family_id),
        expires_in=accounts.access_tokens.ttl_seconds,
    )
    return user, pair


def logout(session: Session, user: User, refresh_token: str) -> None:
    """End the session the refresh token belongs to (its whole family). Unknown tokens are ignored."""
    record = session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == hash_token(refresh_token))
    ).scalar_one_or_none()
    if record is not None and record.user_id == user.id:
        revoke_family(session, record.family_id)


def active_user(session: Session, user_id: uuid.UUID) -> User:
    """Load the user an access token was issued to; raises AuthenticationFailed unless active.

    Checked on every request, so suspending a user stops their tokens at once.
    """
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise AuthenticationFailed("access token is invalid")
    return user


def cached_active_user(
    cache: UserCache,
    user_id: uuid.UUID,
    session: Callable[[], Session],
    prefetched: tuple[User | None, str | None] | None = None,
) -> User:
    """Like `active_user`, from the user cache when it has the row (the session is then never opened).

    Only for read-only requests: the user returned may be detached from any session.
    `prefetched` is what the cache's `loaded` gave, when the caller already fetched it.
    """
    cached, generation = prefetched if prefetched is not None else cache.load(user_id)
    if cached is not None and cached.is_active:
        return cached
    user = active_user(session(), user_id)
    cache.store(user, generation)
    return user


def start_mfa_setup(user: User) -> tuple[str, str]:
    """Give the user a new TOTP secret (not yet enforced); returns it and its otpauth URI."""
    if user.mfa_enabled:
        raise Conflict("MFA is already enabled; disable it first")
    secret = mfa.new_secret()
    user.mfa_secret = secret
    user.mfa_last_step = None
    return secret, mfa.provisioning_uri(secret, user.email)


def enable_mfa(user: User, code: str) -> None:
    """Turn MFA on once the user proves their authenticator produces valid codes."""
    if user.mfa_enabled:
        raise Conflict("MFA is already enabled")
    if user.mfa_secret is None:
        raise Conflict("MFA setup has not been started")
    if not mfa.accept_code(user, code):
        raise InvalidInput("code: the one-time code is not valid", details=[_field("code", "not valid")])
    user.mfa_enabled = True
    _audit_own(user, "user.mfa_enabled")


def disable_mfa(user: User, code: str) -> None:
    """Turn MFA off; a current code is required."""
    if not user.mfa_enabled:
        raise Conflict("MFA is not enabled")
    if not mfa.accept_code(user, code):
        raise InvalidInput("code: the one-time code is not valid", details=[_field("code", "not valid")])
    user.mfa_enabled = False
    user.mfa_secret = None
    user.mfa_last_step = None
    _audit_own(user, "user.mfa_disabled")


def _audit_own(user: User, action: str) -> None:
    """Record in the audit trail something the user did to their own account."""
    session = object_session(user)
    if session is None:
        raise RuntimeError("the user must belong to the request's session")
    audit.record(session, Fact(action, "user", str(user.id), actor_id=str(user.id)))


def update_profile(user: User, changes: dict[str, Any]) -> User:
    """Apply self-service changes (name, phone, metadata); role and status are not among them.

    A new phone number is unverified until confirmed again.
    """
    if "phone" in changes and changes["phone"] != user.phone:
        user.phone_verified = False
    for key in ("name", "phone", "profile_metadata"):
        if key in changes:
            setattr(user, key, changes[key])
    return user


def list_users(
    session: Session,
    *,
    role: Role | None = None,
    status: UserStatus | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Page[User]:
    """List users newest first, one keyset page at a time."""
    query = select(User)
    if role is not None:
        query = query.where(User.role == role)
    if status is not None:
        query = query.where(User.status == status)
    return newest_first(session, query, (User.created_at, User.id), cursor=cursor, limit=limit)


def administer_user(session: Session, admin: User, user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    """Change another user's role, status or name.

    Suspending revokes every refresh token at once; access tokens stop working because
    each request checks the account status. Raises NotFound, or Conflict when an admin
    tries to demote or suspend themselves.
    """
    user = session.get(User, user_id)
    if user is None or user.status == UserStatus.ERASED:
        raise NotFound("user not found")
    if user.id == admin.id and ("role" in changes or "status" in changes):
        raise Conflict("administrators cannot change their own role or status")
    if "role" in changes:
        user.role = changes["role"]
    if "name" in changes:
        user.name = changes["name"]
    if "status" in changes:
        user.status = changes["status"]
        if user.status != UserStatus.ACTIVE:
            revoke_all_for_user(session, user.id)
    data: dict[str, Scalar] = {
        "changed": ",".join(sorted(changes)),
        "role": user.role.value,
        "status": user.status.value,
    }
    audit.record(session, Fact("user.administered", "user", str(user.id), actor_id=str(admin.id), data=data))
    return user


def _field(field: str, message: str) -> dict[str, Any]:
    return {"field": field, "message": message}
