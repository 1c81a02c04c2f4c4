"""A Redis copy of the public job listing's pages, so repeated searches skip PostgreSQL.

Every viewer who owns no posting sees the same page for the same query, so the page's
response body is kept under a hash of the normalised query (`ListingQuery`), tagged with
the listing's generation. The generation is a random token replaced after every commit
that can change a public page (`track_job_changes`): a page is served only while its tag
is the current generation, and a reader stores what it queried only if the generation is
still the one it read before querying (a Lua script), so a slow reader can never put back
a page older than a committed change. A random token rather than a counter: an evicted
generation key can never come back as a value some old page was tagged with.

Time changes pages too: a published posting disappears when its `expiresAt` passes, so a
page lives no longer than the earliest expiry among the postings it was built from (see
`domain.jobs.service.Listing.stable_until`), and never longer than `ttl_seconds`.

If Redis fails right after a commit, a page may outlive the change by at most
`ttl_seconds`; every process that writes jobs or employers must call `track_job_changes` on
its database. Changes made outside the ORM session (raw SQL) are not seen and age out the
same way. Redis being down only costs speed: reads fall back to PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import datetime

import redis
from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from domain.core.db import Database, utcnow
from domain.core.redis import OutageBackoff
from domain.jobs.models import Job
from domain.users.models import Role, User

logger = logging.getLogger(__name__)

GENERATION_KEY = "joblist:generation"
PAGE_PREFIX = "joblist:page:"
CHANGED = "deepref.job_listing_changed"
# Between the generation a page was stored under and the page's body.
TAG_SEPARATOR = b" "

# Store the page only if the listing's generation is still the one seen before querying.
# ARGV: the generation seen ('' if there was none yet), the tag (the generation seen, or a
# fresh one to start with when there was none), the tagged page, its time to live in ms.
STORE_IF_CURRENT = """
local current = redis.call('GET', KEYS[1])
if not current and ARGV[1] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
  current = ARGV[2]
end
if current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
"""


@dataclass(frozen=True)
class ListingQuery:
    """What decides a public page: the search, the cursor and the page size."""

    q: str | None
    location: str | None
    remote_type: str | None
    cursor: str | None
    limit: int

    def key(self) -> str:
        # Locations match regardless of case (the service compares them lowercased).
        location = self.location.lower() if self.location is not None else None
        normalised = json.dumps([self.q, location, self.remote_type, self.cursor, self.limit])
        return PAGE_PREFIX + hashlib.sha256(normalised.encode()).hexdigest()


@dataclass(frozen=True)
class Lookup:
    """A cached body (None on a miss) and the generation to pass to `put`.

    The generation is "" when the listing has none yet, and None when Redis is unavailable
    (then nothing is stored).
    """

    body: bytes | None
    generation: str | None


class ListingCache:
    def __init__(self, client: redis.Redis, ttl_seconds: float) -> None:
        self._client = client
        self.ttl_seconds = ttl_seconds
        self._store = client.register_script(STORE_IF_CURRENT)
        self._backoff = OutageBackoff()

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def get(self, query: ListingQuery) -> Lookup:
        """The page stored for `query` under the current generation, if any."""
        if not self.enabled or self._backoff.active:
            return Lookup(None, None)
        try:
            generation, page = self._client.mget(GENERATION_KEY, query.key())
        except redis.RedisError:
            self._backoff.failed()
            return Lookup(None, None)
        if not isinstance(generation, bytes):
            return Lookup(None, "")
        tag, separator, body = page.partition(TAG_SEPARATOR) if isinstance(page, bytes) else (b"", b"", b"")
        return Lookup(body if separator and tag == generation else None, generation.decode())

    def put(self, query: ListingQuery, body: bytes, generation: str | None, stable_until: datetime | None) -> bool:
        """Keep `body` for `query`, unless the listing changed since `generation` was read; True if kept.

        The page lives `ttl_seconds`, or less when `stable_until` (the earliest expiry among
        its postings) comes sooner.
        """
        if generation is None or not self.enabled or self._backoff.active:
            return False
        ttl_ms = math.floor(self.ttl_seconds * 1000)
        if stable_until is not None:
            ttl_ms = min(ttl_ms, math.floor((stable_until - utcnow()).total_seconds() * 1000))
        if ttl_ms <= 0:
            return False
        tag = generation or secrets.token_hex(16)
        try:
            stored = self._store(
                keys=[GENERATION_KEY, query.key()],
                args=[generation, tag, tag.encode() + TAG_SEPARATOR + body, ttl_ms],
            )
        except redis.RedisError:
            self._backoff.failed()
            return False
        return bool(stored)

    def invalidate(self) -> None:
        """Make every stored page, and every page being queried now, unservable."""
        try:
            self._client.set(GENERATION_KEY, secrets.token_hex(16))
        except redis.RedisError as exc:
            logger.error("job listing cache not invalidated", extra={"error": str(exc)})


def track_job_changes(database: Database, cache: ListingCache) -> None:
    """Invalidate the listing after every commit of `database`'s sessions that may change a public page.

    That is any insert, update or delete of a job (flushed or a bulk statement), and any
    change to an employer (their name is shown on their postings).
    """
    for factory in database.factories:
        event.listen(factory, "after_flush", _collect_changes)
        event.listen(factory, "do_orm_execute", _collect_bulk_changes)
        event.listen(factory, "after_commit", lambda session: _invalidate_if_changed(session, cache))


def _collect_changes(session: Session, flush_context: UOWTransaction) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(obj, Job) for obj in changed) or any(
        _is_or_was_employer(obj) for obj in (*session.dirty, *session.deleted) if isinstance(obj, User)
    ):
        session.info[CHANGED] = True


def _is_or_was_employer(user: User) -> bool:
    # A new user owns no posting yet; a demoted employer's postings still show their name.
    return user.role == Role.EMPLOYER or Role.EMPLOYER in inspect(user).attrs.role.history.deleted


def _collect_bulk_changes(state: ORMExecuteState) -> None:
    if (state.is_insert or state.is_update or state.is_delete) and any(
        mapper.class_ in (Job, User) for mapper in state.all_mappers
    ):
        state.session.info[CHANGED] = True


def _invalidate_if_changed(session: Session, cache: ListingCache) -> None:
    if session.info.pop(CHANGED, False):
        cache.invalidate()
