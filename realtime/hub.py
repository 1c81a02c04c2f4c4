"""One Redis subscription per relay process, fanned out in process to each user's clients.

A relay process holds thousands of streams; a Redis connection per stream would cost
Redis a client each and the relay a socket each. Instead one greenlet `PSUBSCRIBE`s to
every user channel and hands each event to the mailboxes of that user's open streams.

Mailboxes are bounded: a client that does not read fast enough is disconnected instead
of letting the relay's memory grow (it reconnects with `Last-Event-ID` and catches up
from the replay stream).

The subscriber reconnects by itself with backoff. Events published while it was away
are read back from the users' replay streams once it is subscribed again, so a Redis
restart costs connected clients a delay, not events. Where to read from is the
"watermark": a Redis time before which every published event is known to have reached
the subscription. It is taken with TIME and confirmed by a PING sent on the subscription
itself: Redis answers in order, so when the PONG arrives, every event published before
that TIME has been read.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any

import gevent  # type: ignore[import-untyped]
import gevent.event  # type: ignore[import-untyped]
import gevent.queue  # type: ignore[import-untyped]
import redis

from domain.core.events import CHANNEL_PATTERN, Event, stream, user_of_channel

logger = logging.getLogger("deepref.relay")

EVENT_ID = re.compile(r"^(\d+)-(\d+)$")
MAILBOX_SIZE = 256
# Seconds between reconnection attempts: doubled after each failure, with jitter.
RECONNECT_INITIAL = 0.1
RECONNECT_MAX = 5.0
# Seconds between watermarks, and the longest the subscriber waits for a message.
MARK_SECONDS = 1.0
MARK_PING = "deepref-relay-mark"


def parse_event_id(value: str) -> tuple[int, int] | None:
    """The (milliseconds, sequence) of a stream id, or None if `value` is not one."""
    match = EVENT_ID.match(value)
    return (int(match[1]), int(match[2])) if match else None


def _key(event_id: str) -> tuple[int, int]:
    return parse_event_id(event_id) or (0, 0)


class ClientGone(Exception):
    """The stream must end: the relay is shutting down or the client fell too far behind."""


class _Wake:
    """Put in a mailbox to wake its reader when the mailbox is closed."""


WAKE = _Wake()


class Mailbox:
    """The bounded queue of events waiting to be written to one client's stream.

    `cursor` is the newest event id the client has been given or will be given: events
    at or before it are dropped, so a replay and live delivery never repeat an event.
    `since` is the watermark when the stream opened: where a backfill starts for a
    client that has had no event yet.
    """

    def __init__(
        self,
        user_id: str,
        cursor: str | None = None,
        since: str | None = None,
        capacity: int = MAILBOX_SIZE,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.user_id = user_id
        self.cursor = cursor
        self.since = since
        self.closed: str | None = None
        self._queue = gevent.queue.Queue(capacity)
        self._on_overflow = on_overflow

    def offer(self, event: Event) -> bool:
        """Queue `event` unless already seen; False when the mailbox is (now) closed."""
        if self.closed is not None:
            return False
        if self.cursor is not None and _key(event.id) <= _key(self.cursor):
            return True
        try:
            self._queue.put_nowait(event)
        except gevent.queue.Full:
            self.close("client too slow: buffer full")
            if self._on_overflow is not None:
                self._on_overflow()
            return False
        self.cursor = event.id
        return True

    def close(self, reason: str) -> None:
        """End the stream reading this mailbox, waking it if it is waiting."""
        if self.closed is None:
            self.closed = reason
            # A full queue means the reader is busy writing: it sees `closed` before its next read.
            with suppress(gevent.queue.Full):
                self._queue.put_nowait(WAKE)

    def next(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds without one; raises ClientGone."""
        if self.closed is not None:
            raise ClientGone(self.closed)
        try:
            item = self._queue.get(timeout=timeout)
        except gevent.queue.Empty:
            return None
        if not isinstance(item, Event) or self.closed is not None:
            raise ClientGone(self.closed or "closed")
        return item

    def backfill_from(self) -> str | None:
        """The id after which this client may have missed events, if known."""
        known = [value for value in (self.cursor, self.since) if value is not None]
        return max(known, key=_key) if known else None


class Hub:
    """The user id → mailboxes registry, and the subscriber feeding it."""

    def __init__(self, client: redis.Redis, capacity: int = MAILBOX_SIZE) -> None:
        self._client = client
        self.capacity = capacity
        self._mailboxes: dict[str, set[Mailbox]] = {}
        self.ready = gevent.event.Event()
        self.closing = False
        self.watermark: str | None = None
        self._pending_mark: str | None = None
        self._marked_at = 0.0
        self._subscriber: gevent.Greenlet | None = None
        self._delay = RECONNECT_INITIAL

    @property
    def connections(self) -> int:
        return sum(len(boxes) for boxes in self._mailboxes.values())

    def register(
        self,
        user_id: str,
        cursor: str | None = None,
        on_overflow: Callable[[], None] | None = None,
        since: str | None = None,
    ) -> Mailbox:
        """A new mailbox for one of the user's streams; events published from now on reach it.

        `since` (an event id) overrides the watermark as where a backfill would start for it:
        a stream opened before the first subscription is backfilled from when it opened.
        """
        mailbox = Mailbox(user_id, cursor, since or self.watermark, self.capacity, on_overflow)
        self._mailboxes.setdefault(user_id, set()).add(mailbox)
        return mailbox

    def unregister(self, mailbox: Mailbox) -> None:
        boxes = self._mailboxes.get(mailbox.user_id)
        if boxes is not None:
            boxes.discard(mailbox)
            if not boxes:
                del self._mailboxes[mailbox.user_id]

    def deliver(self, user_id: str, events: Iterable[Event]) -> None:
        """Hand events to every open stream of the user; streams that overflow are dropped."""
        boxes = self._mailboxes.get(user_id)
        if not boxes:
            return
        for event in events:
            for mailbox in list(boxes):
                if not mailbox.offer(event):
                    self.unregister(mailbox)

    def dispatch(self, message: dict[str, Any]) -> None:
        """Handle one message of the subscription: a user's event, a confirmation, a PONG."""
        kind = message.get("type")
        if kind == "pmessage":
            try:
                event = Event.from_message(message["data"])
                user_id = user_of_channel(message["channel"])
            except (ValueError, UnicodeDecodeError):
                logger.warning("malformed event on %r ignored", message.get("channel"))
                return
            self.deliver(user_id, [event])
        elif kind == "psubscribe":
            self._subscribed()
        elif kind == "pong" and self._pending_mark is not None:
            self.watermark, self._pending_mark = self._pending_mark, None

    def close(self) -> None:
        """Stop the subscriber and end every open stream (the worker is shutting down)."""
        self.closing = True
        for boxes in list(self._mailboxes.values()):
            for mailbox in list(boxes):
                mailbox.close("relay shutting down")
        self._mailboxes.clear()
        if self._subscriber is not None:
            self._subscriber.kill(block=False)

    # --- the subscriber ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the subscriber greenlet, once per process (call it in the worker, after fork)."""
        if self._subscriber is None and not self.closing:
            self._subscriber = gevent.spawn(self.run)

    def run(self) -> None:
        """Listen until closed; reconnect with backoff whenever Redis goes away."""
        while not self.closing:
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                logger.warning("event subscription lost, reconnecting in %.1fs: %s", self._delay, exc)
            except Exception:
                # A bug must not silence every stream of the process for good.
                logger.exception("event subscriber failed, restarting it in %.1fs", self._delay)
            self.ready.clear()
            gevent.sleep(self._delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret
            self._delay = min(self._delay * 2, RECONNECT_MAX)

    def _listen(self) -> None:
        pubsub = self._client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
        self._pending_mark = None
        try:
            pubsub.psubscribe(CHANNEL_PATTERN)
            while not self.closing:
                message = pubsub.get_message(timeout=MARK_SECONDS)
                if message is not None:
                    self.dispatch(message)
                    # Let the streams write what was just queued before reading more, so a
                    # burst of events cannot fill a healthy client's mailbox.
                    gevent.sleep(0)
                if self.ready.is_set() and time.monotonic() - self._marked_at >= MARK_SECONDS:
                    self._mark(pubsub)
        finally:
            pubsub.close()

    def _subscribed(self) -> None:
        """Events flow again: recover what was published while unsubscribed."""
        if self._mailboxes:
            self.backfill()
        self._delay = RECONNECT_INITIAL
        self.ready.set()
        logger.info("subscribed to user events")

    def _mark(self, pubsub: redis.client.PubSub) -> None:
        """Ask for a new watermark: Redis's time now, valid once the PING behind it is answered."""
        self._pending_mark = self.now_id()
        self._marked_at = time.monotonic()
        pubsub.ping(MARK_PING)

    def now_id(self) -> str:
        """An event id just before Redis's clock now (one Redis round trip)."""
        seconds, microseconds = self._client.time()
        # A millisecond back: events of this very millisecond may be published after the TIME.
        return f"{seconds * 1000 + microseconds // 1000 - 1}-0"

    def backfill(self) -> None:
        """Deliver, from the replay streams, events the connected clients may have missed."""
        starts = [(user_id, self._oldest_start(boxes)) for user_id, boxes in self._mailboxes.items()]
        users = [(user_id, start) for user_id, start in starts if start is not None]
        pipe = self._client.pipeline(transaction=False)
        for user_id, start in users:
            pipe.xrange(stream(user_id), min=f"({start}", count=self.capacity)
        for (user_id, _), entries in zip(users, pipe.execute(), strict=True):
            missed = [_entry_event(entry_id, fields) for entry_id, fields in entries]
            self.deliver(user_id, [event for event in missed if event is not None])

    def _oldest_start(self, boxes: set[Mailbox]) -> str | None:
        """Where the user's backfill starts: the oldest point any of their clients may miss from."""
        starts = [start for box in boxes if (start := box.backfill_from() or self.watermark) is not None]
        return min(starts, key=_key) if starts else None


def _entry_event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event | None:
    if b"event" not in fields or b"data" not in fields:
        return None
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Event(text, fields[b"event"].decode(), fields[b"data"].decode())
