"""The SSE relay: `GET /events` streams a user's events; `realtime.app:app` is what gunicorn serves.

A client authenticates with an access token (`Authorization: Bearer …`) or, for an
EventSource, which cannot send headers, with a single-use ticket (`?ticket=…`, issued by
the ingress). Its stream is fed by the process's one Redis subscription (see
`realtime.hub`); `Last-Event-ID` (or `?lastEventId=`) first replays what it missed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from domain.core import events, models_registry
from domain.core.config import Settings, load_settings
from domain.core.db import Database
from domain.core.errors import AuthenticationFailed
from domain.core.logging import configure_logging
from domain.core.redis import create_redis
from domain.users.cache import UserCache
from domain.users.service import cached_active_user
from domain.users.tokens import AccessTokens
from realtime.http import Refusal, Request, base_headers, envelope, preflight_headers, respond_json, status_line
from realtime.hub import Hub, Mailbox, parse_event_id
from realtime.stream import EventStream

logger = logging.getLogger("deepref.relay")

Handler = Callable[[Request, Any], Iterable[bytes]]
UNAVAILABLE = (redis.RedisError, DBAPIError, PoolTimeoutError)
# Seconds: how long clients are asked to wait before retrying a refused connection.
RETRY_AFTER = "2"
# Seconds a new stream waits for the subscription when the process has just started.
SUBSCRIPTION_WAIT = 1.0
# Streams hold no Redis connection: these serve the subscription, tickets, replays and the user cache.
REDIS_POOL_SIZE = 100


class Relay:
    """The WSGI application; one per worker process."""

    def __init__(self, settings: Settings, redis_client: redis.Redis, database: Database, hub: Hub) -> None:
        self.settings = settings
        self.redis = redis_client
        self.database = database
        self.hub = hub
        self.tokens = AccessTokens(
            settings.secret_key, settings.jwt_issuer, settings.jwt_audience, settings.access_token_ttl
        )
        self.user_cache = UserCache(redis_client, settings.master_key)
        self.streams = 0
        self._routes: dict[str, dict[str, Handler]] = {
            "/events": {"GET": self.open_stream, "OPTIONS": self.preflight},
            "/healthz": {"GET": self.healthz},
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        try:
            return self._route(request, start_response)
        except Refusal as refusal:
            body = envelope(request, refusal.status, refusal.message)
            return respond_json(start_response, refusal.status, body, self._headers(request) + refusal.headers)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request.request_id})
            body = envelope(request, 500, "an unexpected error occurred; it has been logged")
            return respond_json(start_response, 500, body, self._headers(request))

    def _route(self, request: Request, start_response: Any) -> Iterable[bytes]:
        methods = self._routes.get(request.path)
        if methods is None:
            raise Refusal(404, f"no such path: {request.path}")
        handler = methods.get(request.method)
        if handler is None:
            raise Refusal(405, f"{request.method} is not allowed here", [("Allow", ", ".join(methods))])
        return handler(request, start_response)

    def _headers(self, request: Request) -> list[tuple[str, str]]:
        return base_headers(request, self.settings.allowed_origins)

    def healthz(self, request: Request, start_response: Any) -> Iterable[bytes]:
        """The process is up (not whether Redis is: streams survive a Redis outage)."""
        body = {"status": "ok", "streams": self.streams, "subscribed": self.hub.ready.is_set()}
        return respond_json(start_response, 200, body, self._headers(request))

    def preflight(self, request: Request, start_response: Any) -> Iterable[bytes]:
        start_response(
            status_line(204), self._headers(request) + preflight_headers(request, self.settings.allowed_origins)
        )
        return []

    def open_stream(self, request: Request, start_response: Any) -> Iterable[bytes]:
        """Authenticate, register the client with the hub, replay what it missed, then stream."""
        if self.hub.closing:
            raise Refusal(503, "the relay is restarting; reconnect shortly", [("Retry-After", RETRY_AFTER)])
        if self.streams >= self.settings.relay_max_connections:
            raise Refusal(503, "too many open streams on this relay; retry shortly", [("Retry-After", RETRY_AFTER)])
        last_id = last_event_id(request)
        # The slot is taken before any I/O, so concurrent requests cannot overshoot the limit.
        self.streams += 1
        try:
            with unavailable_as_503():
                user_id = self.authenticate(request)
                body = self._start(request, user_id, last_id)
        except BaseException:
            self.streams -= 1
            raise
        start_response(
            status_line(200),
            [
                ("Content-Type", "text/event-stream"),
                ("Cache-Control", "no-cache"),
                ("X-Accel-Buffering", "no"),
                *self._headers(request),
            ],
        )
        logger.info("stream opened", extra={"request_id": request.request_id, "user_id": user_id})
        return body

    def authenticate(self, request: Request) -> str:
        """The id of the active user the request's token or ticket belongs to; raises Refusal(401)."""
        header = request.header("Authorization")
        try:
            if header:
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise AuthenticationFailed("Authorization must be 'Bearer <access token>'")
                user_id = self.tokens.subject(token.strip())
            else:
                user_id = self._redeem(request.query("ticket"))
            self._check_active(user_id)
        except AuthenticationFailed as exc:
            raise Refusal(401, exc.message, [("WWW-Authenticate", 'Bearer realm="deepref"')]) from exc
        return str(user_id)

    def _redeem(self, ticket: str | None) -> uuid.UUID:
        if not ticket:
            raise AuthenticationFailed("authentication required: an Authorization bearer token or a ticket")
        owner = events.redeem_ticket(self.redis, ticket)
        if owner is None:
            raise AuthenticationFailed("ticket is invalid, expired or already used")
        return uuid.UUID(owner)

    def _register_before_subscription(self, user_id: str, last_id: str | None, client_socket: Any) -> Mailbox:
        """Open a mailbox while the subscription is still starting, missing nothing meanwhile.

        The mailbox is backfilled from the moment the stream opened once the subscription is
        confirmed; if that happened while the opening instant was being read, right away.
        After an outage the hub's last watermark is that starting point already, and Redis
        may still be down: the stream opens all the same.
        """
        since = None
        if self.hub.watermark is None:
            with suppress(redis.RedisError):
                since = self.hub.now_id()
        mailbox = self.hub.register(user_id, last_id, on_overflow=lambda: _disconnect(client_socket), since=since)
        if self.hub.ready.is_set():
            self.hub.backfill()
        else:
            self.hub.ready.wait(SUBSCRIPTION_WAIT)
        return mailbox

    def _check_active(self, user_id: uuid.UUID) -> None:
        """A suspended or erased user's token no longer opens streams (raises AuthenticationFailed)."""
        opened: list[Session] = []

        def session() -> Session:
            opened.append(self.database.session(read_only=True))
            return opened[-1]

        try:
            cached_active_user(self.user_cache, user_id, session)
        finally:
            for each in opened:
                each.close()

    def _start(self, request: Request, user_id: str, last_id: str | None) -> EventStream:
        self.hub.start()
        client_socket = request.environ.get("gunicorn.socket")
        if self.hub.ready.is_set():
            mailbox = self.hub.register(user_id, last_id, on_overflow=lambda: _disconnect(client_socket))
        else:
            mailbox = self._register_before_subscription(user_id, last_id, client_socket)
        try:
            replayed = events.replay(self.redis, user_id, last_id) if last_id else []
        except BaseException:
            self.hub.unregister(mailbox)
            raise
        return EventStream(
            mailbox,
            replayed,
            self.settings.relay_heartbeat_seconds,
            self._stream_closed,
            lifetime_seconds=self.settings.access_token_ttl,
            still_allowed=lambda: self._still_active(uuid.UUID(user_id)),
        )

    def _still_active(self, user_id: uuid.UUID) -> bool:
        """Whether the user may keep their stream; an outage gives them the benefit of the doubt."""
        try:
            self._check_active(user_id)
        except AuthenticationFailed:
            return False
        except UNAVAILABLE:
            return True
        return True

    def _stream_closed(self, stream: EventStream) -> None:
        self.hub.unregister(stream.mailbox)
        self.streams -= 1
        logger.info(
            "stream closed",
            extra={
                "user_id": stream.mailbox.user_id,
                "events": stream.sent,
                "reason": stream.mailbox.closed or "client went away",
            },
        )

    def shutdown(self) -> None:
        """End every open stream now: they are infinite, so the server would wait for them in vain."""
        self.hub.close()


def last_event_id(request: Request) -> str | None:
    """The id the client saw last (header, else `?lastEventId=`); raises Refusal(400) if malformed."""
    value = request.header("Last-Event-ID") or request.query("lastEventId")
    if not value:
        return None
    if parse_event_id(value.strip()) is None:
        raise Refusal(400, "Last-Event-ID must be an event id such as 1700000000000-0")
    return value.strip()


@contextmanager
def unavailable_as_503() -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        logger.error("dependency unavailable: %s", type(exc).__name__)
        raise Refusal(
            503, "a backing service is temporarily unavailable; retry shortly", [("Retry-After", RETRY_AFTER)]
        ) from exc


def _disconnect(client_socket: socket.socket | None) -> None:
    """Cut a client that cannot keep up: its writer, maybe blocked on a full socket, fails at once."""
    if client_socket is not None:
        with suppress(OSError):
            client_socket.shutdown(socket.SHUT_RDWR)


def create_relay(
    settings: Settings, redis_client: redis.Redis | None = None, database: Database | None = None
) -> Relay:
    """Build the relay. Tests may pass their own Redis client and database."""
    models_registry.import_all()
    client = redis_client or create_redis(settings, max_connections=REDIS_POOL_SIZE)
    return Relay(settings, client, database or Database.from_settings(settings), Hub(client))


def shutdown() -> None:
    """End the open streams of this process's relay, if it was built."""
    relay = globals().get("app")
    if isinstance(relay, Relay):
        relay.shutdown()


def __getattr__(name: str) -> Relay:
    """Build `app` on first access, so importing this module has no side effects."""
    if name == "app":
        configure_logging(os.environ.get("LOG_LEVEL", "info").upper())
        relay = create_relay(load_settings())
        globals()["app"] = relay
        return relay
    raise AttributeError(name)
