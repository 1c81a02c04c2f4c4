"""Access tokens (JWT) and refresh tokens (opaque, stored hashed, rotated on use)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.core.crypto import hash_token, new_token
from domain.core.db import utcnow
from domain.core.errors import AuthenticationFailed
from domain.users.models import RefreshToken, User

# Exactly one algorithm is ever accepted; the header's `alg` is not trusted.
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# Access tokens verified by this process, remembered until they expire: a client sends the
# same token with every request for its whole life, and checking the signature again costs
# more than all the rest of reading the caller. Bounded; the oldest go first.
VERIFIED_TOKENS_KEPT = 10_000


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


class AccessTokens:
    """Signs and checks short-lived access tokens."""

    def __init__(
        self, secret_key: str, issuer: str, audience: str, ttl_seconds: int, kept: int = VERIFIED_TOKENS_KEPT
    ) -> None:
        self._key = secret_key
        self.issuer = issuer
        self.audience = audience
        self.ttl_seconds = ttl_seconds
        self._kept = kept
        # token -> (subject, expiry as a Unix time), in the order they were verified
        self._verified: dict[str, tuple[uuid.UUID, float]] = {}

    def issue(self, user_id: uuid.UUID) -> str:
        now = utcnow()
        claims = {
            "sub": str(user_id),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + timedelta(seconds=self.ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def subject(self, token: str) -> uuid.UUID:
        """Return the user id a valid token was issued to; raises AuthenticationFailed."""
        known = self._verified.get(token)
        if known is not None and time.time() < known[1]:
            return known[0]
        self._verified.pop(token, None)
        subject, expires_at = self._verify(token)
        if len(self._verified) >= self._kept:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (subject, expires_at)
        return subject

    def _verify(self, token: str) -> tuple[uuid.UUID, float]:
        """The subject and expiry of a token whose signature and claims hold."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
            return uuid.UUID(str(claims["sub"])), float(claims["exp"])
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationFailed("access token has expired") from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise AuthenticationFailed("access token is invalid") from exc


def issue_refresh_token(session: Session, user: User, ttl_seconds: int, family_id: uuid.UUID | None = None) -> str:
    """Create a refresh token for `user` (a new family unless one is given)."""
    token = new_token()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id or uuid.uuid4(),
            token_hash=hash_token(token),
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
        )
    )
    return token


def consume_refresh_token(session: Session, token: str) -> tuple[RefreshToken, User]:
    """Mark a refresh token used and return it with its user (one query), for rotation.

    Presenting a token that was already used revokes its whole family (it was stolen or
    replayed). Raises AuthenticationFailed for unknown, expired, revoked or reused tokens.
    """
    found = session.execute(
        select(RefreshToken, User)
        .join(User, User.id == RefreshToken.user_id)
        .where(RefreshToken.token_hash == hash_token(token))
        .with_for_update(of=RefreshToken)
    ).one_or_none()
    if found is None:
        raise AuthenticationFailed("refresh token is invalid")
    record, user = found
    if record.revoked_at is not None or record.expires_at <= utcnow():
        raise AuthenticationFailed("refresh token is invalid")
    if record.used_at is not None:
        revoke_family(session, record.family_id)
        # The revocation must survive the error the caller is about to raise.
        session.commit()
        raise AuthenticationFailed("refresh token is invalid")
    record.used_at = utcnow()
    return record, user


def revoke_family(session: Session, family_id: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def revoke_all_for_user(session: Session, user_id: uuid.UUID) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
