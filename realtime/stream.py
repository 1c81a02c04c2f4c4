"""The body of one `text/event-stream` response: replay, then live events and heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from domain.core.events import Event
from realtime.hub import ClientGone, Mailbox, parse_event_id

# Sent first so the client sees at once that the stream is open, and reconnects after 3 s.
OPENING = b"retry: 3000\n: stream open\n\n"
HEARTBEAT = b": heartbeat\n\n"
# Sent before the relay ends a stream whose credentials ran out: reconnect with fresh ones.
REAUTHENTICATE = b'event: stream.closed\ndata: {"reason":"reauthenticate"}\n\n'


class EventStream:
    """An iterable WSGI body that ends when the client is gone, too slow, or the relay stops.

    It also ends when its credentials would have: after `lifetime_seconds` (an access
    token's life) or at the first heartbeat after `still_allowed()` turns false (the user
    was suspended), with a `stream.closed` event asking the client to authenticate again.
    The server calls `close()` however the stream ends (even if it never started), which
    releases the client's mailbox and connection slot.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        replayed: Sequence[Event],
        heartbeat_seconds: float,
        on_close: Callable[[EventStream], None],
        *,
        lifetime_seconds: float,
        still_allowed: Callable[[], bool],
    ) -> None:
        self.mailbox = mailbox
        self.replayed = replayed
        self.heartbeat_seconds = heartbeat_seconds
        self.still_allowed = still_allowed
        self.opened_at = time.monotonic()
        self.expires_at = self.opened_at + lifetime_seconds
        self.sent = 0
        self._on_close: Callable[[EventStream], None] | None = on_close

    def __iter__(self) -> Iterator[bytes]:
        yield OPENING
        last_sent = self.replayed[-1].id if self.replayed else None
        if self.replayed:
            self.sent += len(self.replayed)
            yield b"".join(event.to_sse() for event in self.replayed)
        while True:
            try:
                event = self.mailbox.next(self.heartbeat_seconds)
            except ClientGone:
                return
            if event is None:
                if time.monotonic() >= self.expires_at or not self.still_allowed():
                    yield REAUTHENTICATE
                    return
                yield HEARTBEAT
            elif last_sent is None or _newer(event.id, last_sent):
                # Events already in the replay were queued live too while it was read.
                last_sent = event.id
                self.sent += 1
                yield event.to_sse()

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)


def _newer(event_id: str, than: str) -> bool:
    return (parse_event_id(event_id) or (0, 0)) > (parse_event_id(than) or (0, 0))
