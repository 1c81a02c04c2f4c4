"""Events for a user's clients: one Redis PUBLISH for the live relay, one XADD for replay.

Every event goes to the owner's replay stream (capped, expiring) and, in the same
server-side script, is published on the owner's channel with the stream id it got. The
relay subscribes once to all user channels (`PSUBSCRIBE`) and fans out in process; a
client reconnecting with `Last-Event-ID` reads what it missed from the stream, so the
stream id is the SSE event id.

Events tell, PostgreSQL decides: publishing is best effort (a failed publish is logged,
never raised), and clients that missed everything can still poll the resource.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from domain.core.crypto import hash_token, new_token

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "deepref:events:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
STREAM_PREFIX = "deepref:stream:"
TICKET_PREFIX = "deepref:ticket:"
# Enough for a client that was away for a while; older events are found by polling.
STREAM_MAX_LENGTH = 1000
STREAM_TTL_SECONDS = 24 * 3600
TICKET_TTL_SECONDS = 30

# XADD then PUBLISH the same event with its stream id, atomically.
APPEND_AND_PUBLISH = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2], 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', KEYS[2], id .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return id
"""


@dataclass(frozen=True)
class Event:
    """One event as the relay sends it: `id:`, `event:` and JSON `data:`."""

    id: str
    name: str
    data: str

    @classmethod
    def from_message(cls, message: bytes | str) -> Event:
        """Parse what `publish` sent on a user channel."""
        text = message.decode() if isinstance(message, bytes) else message
        event_id, name, data = text.split("\n", 2)
        return cls(event_id, name, data)

    def to_sse(self) -> bytes:
        return f"id: {self.id}\nevent: {self.name}\ndata: {self.data}\n\n".encode()


def channel(user_id: uuid.UUID | str) -> str:
    return f"{CHANNEL_PREFIX}{user_id}"


def user_of_channel(name: bytes | str) -> str:
    text = name.decode() if isinstance(name, bytes) else name
    return text.removeprefix(CHANNEL_PREFIX)


def stream(user_id: uuid.UUID | str) -> str:
    return f"{STREAM_PREFIX}{user_id}"


class EventPublisher:
    """Publishes events for users; shared by every process that changes what users watch."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._script = client.register_script(APPEND_AND_PUBLISH)

    def publish(self, user_id: uuid.UUID | str, name: str, data: dict[str, Any]) -> str | None:
        """Send event `name` to the user's clients; return its id, or None if Redis failed."""
        body = json.dumps(data, separators=(",", ":"), default=str)
        try:
            raw = self._script(
                keys=[stream(user_id), channel(user_id)],
                args=[STREAM_MAX_LENGTH, name, body, STREAM_TTL_SECONDS],
            )
        except redis.RedisError:
            logger.warning("event %s for user %s not published: Redis unavailable", name, user_id)
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)


def replay(client: redis.Redis, user_id: uuid.UUID | str, after: str, count: int = STREAM_MAX_LENGTH) -> list[Event]:
    """The user's events after event id `after` (oldest first), at most `count`."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
        stream(user_id), min=f"({after}", count=count
    )
    return [
        Event(_text(entry_id), _text(fields[b"event"]), _text(fields[b"data"]))
        for entry_id, fields in entries
        if b"event" in fields and b"data" in fields
    ]


def issue_ticket(client: redis.Redis, user_id: uuid.UUID | str) -> str:
    """Create a single-use ticket that lets an EventSource (no headers) open the user's stream."""
    ticket = new_token()
    client.set(TICKET_PREFIX + hash_token(ticket).hex(), str(user_id), ex=TICKET_TTL_SECONDS)
    return ticket


def redeem_ticket(client: redis.Redis, ticket: str) -> str | None:
    """The user id a ticket was issued to, consuming it; None if unknown, used or expired."""
    raw = client.getdel(TICKET_PREFIX + hash_token(ticket).hex())
    return None if raw is None else _text(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
