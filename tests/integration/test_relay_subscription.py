"""A stream opened while the relay's first subscription is still starting misses nothing."""

from __future__ import annotations

import uuid

import redis

from domain.core.events import CHANNEL_PATTERN, EventPublisher
from realtime.hub import Hub

CONFIRMED = {"type": "psubscribe", "pattern": None, "channel": CHANNEL_PATTERN.encode(), "data": 1}


def test_events_published_before_the_first_subscription_are_backfilled(redis_client: redis.Redis) -> None:
    hub = Hub(redis_client)
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    early = hub.register(alice, since=hub.now_id())
    unaware = hub.register(bob)  # opened without a starting point: nothing to backfill from
    publisher = EventPublisher(redis_client)
    publisher.publish(uuid.UUID(alice), "reference.updated", {"status": "sent"})
    publisher.publish(uuid.UUID(bob), "reference.updated", {"status": "sent"})
    assert early.next(0) is None  # not subscribed yet: the live message went nowhere

    hub.dispatch(CONFIRMED)
    event = early.next(0)
    assert event is not None and event.name == "reference.updated" and '"sent"' in event.data
    assert unaware.next(0) is None
    assert hub.ready.is_set()
