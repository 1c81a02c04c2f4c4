"""The relay's in-process parts: fan-out, bounded mailboxes, the stream body, and the WSGI edges.

No Redis or PostgreSQL here: the hub's fan-out works on the messages a subscription
delivers, and the requests below are refused before the relay would touch a server
(the relay against real servers is tested in tests/e2e/test_relay.py).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
from typing import Any

import gevent
import pytest
import redis
from sqlalchemy import create_engine

import realtime.app
from domain.core.config import load_settings
from domain.core.db import Database
from domain.core.events import CHANNEL_PATTERN, Event, channel
from realtime import hub as hub_module
from realtime import server
from realtime.app import Relay, create_relay
from realtime.hub import ClientGone, Hub, Mailbox, parse_event_id
from realtime.stream import HEARTBEAT, OPENING, REAUTHENTICATE, EventStream

ALICE = "6f1c1b0e-0000-4000-8000-00000000000a"
BOB = "6f1c1b0e-0000-4000-8000-00000000000b"
ORIGIN = "https://app.deepref.test"


def message(user_id: str, event_id: str, name: str = "operation.updated", data: str = "{}") -> dict[str, Any]:
    """A message as the subscription delivers it."""
    body = f"{event_id}\n{name}\n{data}".encode()
    return {"type": "pmessage", "pattern": CHANNEL_PATTERN.encode(), "channel": channel(user_id).encode(), "data": body}


def unconnected_redis() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=1)


@pytest.fixture
def hub() -> Hub:
    return Hub(unconnected_redis(), capacity=3)


def drain(mailbox: Mailbox) -> list[str]:
    ids = []
    while (event := mailbox.next(0)) is not None:
        ids.append(event.id)
    return ids


# --- fan-out ----------------------------------------------------------------------------------


def test_an_event_reaches_every_stream_of_its_user_and_no_other(hub):
    alice_phone, alice_laptop, bob = hub.register(ALICE), hub.register(ALICE), hub.register(BOB)
    hub.dispatch(message(ALICE, "100-0", data='{"status":"running"}'))
    hub.dispatch(message(BOB, "101-0"))

    for mailbox in (alice_phone, alice_laptop):
        event = mailbox.next(0)
        assert event == Event("100-0", "operation.updated", '{"status":"running"}')
        assert mailbox.next(0) is None
    assert drain(bob) == ["101-0"]
    assert hub.connections == 3


def test_events_for_users_without_streams_are_dropped(hub):
    hub.dispatch(message(ALICE, "1-0"))
    late = hub.register(ALICE)
    assert late.next(0) is None


def test_a_full_mailbox_disconnects_that_client_only(hub):
    cut: list[str] = []
    slow = hub.register(ALICE, on_overflow=lambda: cut.append("slow"))
    fast = hub.register(ALICE)
    received = []
    for n in range(1, 6):
        hub.dispatch(message(ALICE, f"{n}-0"))
        received += drain(fast)

    assert received == ["1-0", "2-0", "3-0", "4-0", "5-0"]
    assert cut == ["slow"] and slow.closed == "client too slow: buffer full"
    assert hub.connections == 1
    with pytest.raises(ClientGone):
        slow.next(0)
    assert slow.offer(Event("6-0", "x", "{}")) is False


def test_an_overflowing_mailbox_without_a_disconnect_callback_just_closes():
    mailbox = Mailbox(ALICE, capacity=1)
    assert mailbox.offer(Event("1-0", "x", "{}"))
    assert not mailbox.offer(Event("2-0", "x", "{}"))
    mailbox.close("again")  # closing twice keeps the first reason
    assert mailbox.closed == "client too slow: buffer full"


def test_events_at_or_before_the_cursor_are_not_repeated():
    mailbox = Mailbox(ALICE, cursor="5-0")
    for event_id in ("4-9", "5-0", "5-1", "5-1", "12-0"):
        mailbox.offer(Event(event_id, "x", "{}"))
    assert drain(mailbox) == ["5-1", "12-0"]
    assert mailbox.cursor == "12-0"


def test_malformed_messages_are_ignored(hub):
    mailbox = hub.register(ALICE)
    hub.dispatch({"type": "pmessage", "channel": channel(ALICE).encode(), "data": b"no separators"})
    hub.dispatch({"type": "pmessage", "channel": channel(ALICE).encode(), "data": b"\xff\xfe"})
    hub.dispatch({"type": "message", "channel": b"other", "data": b"1-0\nx\n{}"})
    assert mailbox.next(0) is None


def test_closing_the_hub_ends_waiting_streams_and_refuses_new_work(hub):
    mailbox = hub.register(ALICE)
    waiting = gevent.spawn(mailbox.next, 10)
    gevent.sleep(0)
    hub.close()
    with pytest.raises(ClientGone, match="shutting down"):
        waiting.get(timeout=1)
    assert hub.closing and hub.connections == 0
    hub.start()
    assert hub._subscriber is None


def test_closing_a_full_mailbox_still_ends_its_stream():
    mailbox = Mailbox(ALICE, capacity=1)
    mailbox.offer(Event("1-0", "x", "{}"))
    mailbox.close("relay shutting down")
    with pytest.raises(ClientGone):
        mailbox.next(0)


def test_unregistering_twice_is_harmless(hub):
    mailbox = hub.register(ALICE)
    hub.unregister(mailbox)
    hub.unregister(mailbox)
    assert hub.connections == 0


# --- subscription bookkeeping ----------------------------------------------------------------


def test_the_first_confirmation_marks_the_hub_ready(hub):
    assert not hub.ready.is_set()
    hub.dispatch({"type": "psubscribe", "pattern": None, "channel": CHANNEL_PATTERN.encode(), "data": 1})
    assert hub.ready.is_set() and hub.watermark is None


def test_a_pong_confirms_the_pending_watermark_only(hub):
    hub.dispatch({"type": "pong", "data": b"deepref-relay-mark"})
    assert hub.watermark is None
    hub._pending_mark = "1700000000000-0"
    hub.dispatch({"type": "pong", "data": b"deepref-relay-mark"})
    assert hub.watermark == "1700000000000-0" and hub._pending_mark is None


def test_backfill_starts_where_the_furthest_behind_client_may_have_missed_events(hub):
    hub.watermark = "100-0"
    fresh = hub.register(ALICE)
    resumed = hub.register(ALICE, cursor="90-0")
    hub.watermark = "200-0"
    never_seen = Mailbox(ALICE)
    assert fresh.backfill_from() == "100-0"
    assert resumed.backfill_from() == "100-0"
    assert Mailbox(ALICE, cursor="300-0", since="200-0").backfill_from() == "300-0"
    assert never_seen.backfill_from() is None
    assert hub._oldest_start({fresh, resumed, never_seen}) == "100-0"


def test_the_subscriber_starts_once_and_outlives_its_own_bugs(hub, monkeypatch, caplog):
    runs: list[int] = []

    def broken_listen() -> None:
        runs.append(1)
        if len(runs) == 2:
            hub.closing = True
        raise RuntimeError("bug")

    monkeypatch.setattr(hub_module, "RECONNECT_INITIAL", 0.001)
    hub._delay = 0.001
    monkeypatch.setattr(hub, "_listen", broken_listen)
    hub.start()
    first = hub._subscriber
    hub.start()
    assert hub._subscriber is first
    first.join(timeout=5)
    assert runs == [1, 1]
    assert "event subscriber failed" in caplog.text


def test_replay_entries_without_an_event_are_skipped():
    assert hub_module._entry_event(b"1-0", {b"event": b"x"}) is None
    assert hub_module._entry_event("1-0", {b"event": b"x", b"data": b"{}"}) == Event("1-0", "x", "{}")


def test_event_ids_are_parsed_strictly():
    assert parse_event_id("1700000000000-12") == (1700000000000, 12)
    for bad in ("", "12", "a-1", "1-2-3", "1- 2"):
        assert parse_event_id(bad) is None


# --- the stream body -------------------------------------------------------------------------


def test_a_stream_opens_replays_dedupes_live_events_and_heartbeats():
    mailbox = Mailbox(ALICE, cursor="1-0")
    replayed = [Event("2-0", "a", "{}"), Event("3-0", "a", "{}")]
    # Published while the replay was read: queued live too, and must not be sent twice.
    mailbox.offer(Event("3-0", "a", "{}"))
    mailbox.offer(Event("4-0", "a", "{}"))
    closed: list[EventStream] = []
    body = EventStream(
        mailbox,
        replayed,
        heartbeat_seconds=0.01,
        on_close=closed.append,
        lifetime_seconds=60,
        still_allowed=lambda: True,
    )
    chunks = iter(body)

    assert next(chunks) == OPENING
    assert next(chunks) == replayed[0].to_sse() + replayed[1].to_sse()
    assert next(chunks) == Event("4-0", "a", "{}").to_sse()
    assert next(chunks) == HEARTBEAT
    mailbox.close("relay shutting down")
    assert list(chunks) == []
    assert body.sent == 3
    body.close()
    body.close()
    assert closed == [body]


def test_a_stream_without_replay_sends_live_events():
    mailbox = Mailbox(ALICE)
    mailbox.offer(Event("7-0", "a", "{}"))
    body = iter(EventStream(mailbox, [], 1, lambda stream: None, lifetime_seconds=60, still_allowed=lambda: True))
    assert next(body) == OPENING
    assert next(body) == Event("7-0", "a", "{}").to_sse()


def test_a_stream_ends_asking_for_new_credentials_when_they_run_out():
    allowed = [True]
    body = iter(
        EventStream(
            Mailbox(ALICE), [], 0.01, lambda stream: None, lifetime_seconds=60, still_allowed=lambda: allowed[0]
        )
    )
    assert next(body) == OPENING
    assert next(body) == HEARTBEAT
    allowed[0] = False  # the user was suspended
    assert list(body) == [REAUTHENTICATE]

    expired = iter(
        EventStream(Mailbox(ALICE), [], 0.01, lambda stream: None, lifetime_seconds=0, still_allowed=lambda: True)
    )
    assert next(expired) == OPENING
    assert list(expired) == [REAUTHENTICATE]


# --- process helpers -------------------------------------------------------------------------


def test_the_open_file_limit_is_raised_to_the_hard_limit(monkeypatch):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard) // 2, hard))
        assert server.raise_open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))

        def refuse(*args: Any) -> None:
            raise ValueError("not permitted")

        monkeypatch.setattr(resource, "setrlimit", refuse)
        assert server.raise_open_file_limit() == hard // 2
    finally:
        monkeypatch.undo()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sigterm_ends_the_streams_then_stops_as_before(monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    stopped: list[int] = []
    ended: list[bool] = []
    monkeypatch.setattr(realtime.app, "shutdown", lambda: ended.append(True))
    try:
        server.end_streams_on_sigterm(lambda signum, frame: stopped.append(signum))
        os.kill(os.getpid(), signal.SIGTERM)
        gevent.sleep(0.01)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped == [signal.SIGTERM] and ended == [True]


# --- the WSGI application's edges ------------------------------------------------------------


@pytest.fixture
def relay(tmp_path) -> Relay:
    settings = load_settings(
        {
            "DEEPREF_ENV": "test",
            "SECRET_KEY": "unit-test-secret-key-unit-test-secret-key",
            "MASTER_KEY": base64.b64encode(b"k" * 32).decode(),
            "DEEPREF_VAR_DIR": str(tmp_path),
            "ALLOWED_ORIGINS": ORIGIN,
            "RELAY_MAX_CONNECTIONS": "2",
        }
    )
    # Neither server is contacted: every request below is answered before the relay would.
    database = Database(create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    return create_relay(settings, redis_client=unconnected_redis(), database=database)


def call(relay: Relay, method: str, path: str, query: str = "", **headers: str) -> tuple[int, dict[str, str], Any]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    environ |= {"HTTP_" + name.upper(): value for name, value in headers.items()}
    started: list[Any] = []
    body = b"".join(relay(environ, lambda status, response_headers: started.append((status, response_headers))))
    status, response_headers = started[0]
    return int(status.split()[0]), dict(response_headers), json.loads(body) if body else None


def test_health_is_reported_without_touching_the_servers(relay):
    status, headers, body = call(relay, "GET", "/healthz", x_request_id="abc-1")
    assert status == 200 and body == {"status": "ok", "streams": 0, "subscribed": False}
    assert headers["X-Request-Id"] == "abc-1" and headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_paths_and_methods_get_the_envelope(relay):
    status, _, body = call(relay, "GET", "/nope", x_request_id="not valid!")
    assert status == 404 and body["path"] == "/nope" and len(body["requestId"]) == 32
    status, headers, body = call(relay, "DELETE", "/healthz")
    assert status == 405 and headers["Allow"] == "GET" and body["error"] == "Method Not Allowed"


def test_preflight_and_cors_headers_follow_the_allow_list(relay):
    status, headers, _ = call(relay, "OPTIONS", "/events", origin=ORIGIN, access_control_request_method="GET")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == ORIGIN
    assert headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    status, headers, _ = call(relay, "OPTIONS", "/events", origin="https://elsewhere.test")
    assert status == 204 and "Access-Control-Allow-Origin" not in headers
    _, headers, _ = call(relay, "GET", "/events", origin=ORIGIN)
    assert headers["Access-Control-Allow-Origin"] == ORIGIN and headers["Vary"] == "Origin"


def test_streams_are_refused_without_credentials_or_with_a_bad_last_event_id(relay):
    status, headers, body = call(relay, "GET", "/events")
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="deepref"'
    assert body["message"].startswith("authentication required")
    status, _, body = call(relay, "GET", "/events", "lastEventId=12", authorization="Bearer x")
    assert status == 400 and body["statusCode"] == 400
    assert relay.streams == 0


def test_streams_beyond_the_limit_or_during_shutdown_get_503(relay):
    relay.streams = 2
    status, headers, body = call(relay, "GET", "/events")
    assert status == 503 and headers["Retry-After"] == "2" and "too many" in body["message"]
    relay.streams = 0
    relay.shutdown()
    status, _, body = call(relay, "GET", "/events")
    assert status == 503 and "restarting" in body["message"]


def test_an_unexpected_error_is_a_500_that_leaks_nothing(relay):
    def broken(request: Any, start_response: Any) -> list[bytes]:
        raise RuntimeError("secret internals")

    relay._routes["/healthz"]["GET"] = broken
    status, _, body = call(relay, "GET", "/healthz")
    assert status == 500 and "secret" not in json.dumps(body)


def test_the_module_builds_its_app_on_demand_only(monkeypatch, relay):
    realtime.app.shutdown()  # no app built in this process: nothing to do
    with pytest.raises(AttributeError):
        realtime.app.not_there  # noqa: B018
    monkeypatch.setitem(vars(realtime.app), "app", relay)  # not setattr: reading `app` first would build one
    realtime.app.shutdown()
    assert relay.hub.closing


def test_a_slow_client_is_cut_at_the_socket():
    left, right = socket.socketpair()
    with left, right:
        realtime.app._disconnect(left)
        realtime.app._disconnect(left)  # already shut: ignored
        assert right.recv(1) == b""
    realtime.app._disconnect(None)
