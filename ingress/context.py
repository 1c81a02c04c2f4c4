"""What each request carries: its id, client address, lazily opened session, caller."""

from __future__ import annotations

import contextvars
import ipaddress
import uuid
from dataclasses import dataclass
from typing import Any

import falcon
import redis
from sqlalchemy.orm import Session

from domain.core.config import Settings
from domain.core.db import Database
from domain.core.ratelimit import RateLimiter
from domain.users.cache import UserCache
from domain.users.models import User
from domain.users.service import Accounts


@dataclass
class Services:
    """The process-wide dependencies the resources and middleware share."""

    settings: Settings
    database: Database
    redis: redis.Redis
    accounts: Accounts
    limiter: RateLimiter
    user_cache: UserCache


class RequestContext(falcon.Context):
    request_id: str
    request_id_token: contextvars.Token[str | None]
    client_ip: str
    body: bytes
    token_subject: str | None
    services: Services

    def __init__(self) -> None:
        super().__init__()
        self.body = b""
        self.token_subject = None
        self._session: Session | None = None
        self.read_only = False
        self._user: User | None = None
        self.input: Any = None
        self.query: Any = None
        # The caller's row as found in the user cache, read with the rate-limit count.
        self.prefetched_caller: tuple[User | None, str | None] | None = None
        # The claimed Idempotency-Key record, and whether the response went into the request's transaction.
        self.idempotency_record: uuid.UUID | None = None
        self.idempotency_stored = False

    @property
    def session(self) -> Session:
        """The request's database session, opened on first use."""
        if self._session is None:
            self._session = self.services.database.session(read_only=self.read_only)
        return self._session

    @property
    def has_session(self) -> bool:
        return self._session is not None

    def close_session(self, commit: bool) -> None:
        """Commit (or roll back) and close the session, if one was opened."""
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                session.commit()
            else:
                session.rollback()
        finally:
            session.close()

    @property
    def user(self) -> User:
        if self._user is None:
            raise RuntimeError("endpoint did not authenticate the caller")
        return self._user

    @user.setter
    def user(self, value: User) -> None:
        self._user = value

    @property
    def caller_scope(self) -> str:
        """Who is calling, for keys that must not collide between callers."""
        return f"user:{self.token_subject}" if self.token_subject else f"ip:{self.client_ip}"


class ApiRequest(falcon.Request):
    context_type = RequestContext
    context: RequestContext


def client_ip(remote_addr: str, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The first untrusted hop: X-Forwarded-For is believed only from trusted proxies."""
    if not forwarded_for or not _is_trusted(remote_addr, trusted):
        return remote_addr
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop if _is_ip(hop) else remote_addr
    return hops[0] if hops and _is_ip(hops[0]) else remote_addr


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in trusted)
