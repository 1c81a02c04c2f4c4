"""A Redis copy of user rows for authenticated reads, so they skip PostgreSQL.

Authenticating a request means loading the caller's row; read-only endpoints take it
from here. The copy holds the row's stored columns only (not the password hash), so
sensitive values stay ciphertext in Redis as they are in PostgreSQL, and it is MACed with
a key derived from the master key: whoever can write to Redis cannot forge a user.

Coherence: every committed change to a user bumps that user's generation and deletes the
copy (`track_user_changes` hooks this into the sessions). A reader that missed stores
what it loaded only if the generation is still the one it saw before loading, so a slow
reader can never put back a row older than a committed change: a suspension is seen by
the very next request. If Redis fails right after a commit the copy may outlive the
change, by at most `TTL_SECONDS`; every process that writes users must call
`track_user_changes` on its database.

Redis being down only costs speed: reads fall back to PostgreSQL.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import uuid
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.attributes import set_committed_value

from domain.core.crypto import derive_key
from domain.core.db import Database
from domain.core.redis import OutageBackoff
from domain.users.models import User

logger = logging.getLogger(__name__)

TTL_SECONDS = 60
MAC_BYTES = 32
# Not needed to serve reads, so never copied to Redis.
UNCACHED_COLUMNS = frozenset({"password_hash"})
GENERATION_TTL_SECONDS = 3600
CHANGED = "deepref.changed_user_ids"

# Store the row only if the user's generation is still the one seen before loading it.
STORE_IF_CURRENT = """
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


class UserCache:
    def __init__(self, client: redis.Redis, master_key: bytes) -> None:
        self._client = client
        self._mac_key = derive_key(master_key, "deepref:user-cache")
        self._store = client.register_script(STORE_IF_CURRENT)
        self._backoff = OutageBackoff()

    def load(self, user_id: uuid.UUID) -> tuple[User | None, str | None]:
        """The cached user (detached) or None, and the generation to pass to `store`.

        The generation is None when Redis is unavailable: then nothing is stored.
        """
        if self._backoff.active:
            return None, None
        try:
            found = self._client.mget(*_keys(user_id))
        except redis.RedisError:
            self._backoff.failed()
            return None, None
        return self.loaded(found)

    @staticmethod
    def keys(user_id: uuid.UUID) -> tuple[str, str]:
        """The keys `load` reads, for a caller that reads them itself; pass their values to `loaded`."""
        return _keys(user_id)

    def loaded(self, found: list[Any]) -> tuple[User | None, str | None]:
        """What `load` returns, from the values of `keys`."""
        row, generation = found
        seen = generation.decode() if isinstance(generation, bytes) else "0"
        return (self._open(row) if isinstance(row, bytes) else None), seen

    def store(self, user: User, generation: str | None) -> None:
        """Keep `user` as loaded from PostgreSQL, unless it changed since `generation` was read."""
        if generation is None or self._backoff.active:
            return
        try:
            self._store(
                keys=list(_keys(user.id)),
                args=[generation, self._seal(user), TTL_SECONDS],
            )
        except redis.RedisError:
            self._backoff.failed()

    def _seal(self, user: User) -> bytes:
        payload = _user_to_json(user).encode()
        return hmac.new(self._mac_key, payload, hashlib.sha256).digest() + payload

    def _open(self, stored: bytes) -> User | None:
        mac, payload = stored[:MAC_BYTES], stored[MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(self._mac_key, payload, hashlib.sha256).digest()):
            logger.error("user cache entry failed its integrity check; ignored")
            return None
        return _user_from_json(payload)

    def invalidate(self, user_ids: set[uuid.UUID]) -> None:
        """Forget these users' copies and make in-flight loads of them unstorable."""
        try:
            pipe = self._client.pipeline(transaction=True)
            for user_id in user_ids:
                pipe.incr(_generation_key(user_id))
                pipe.expire(_generation_key(user_id), GENERATION_TTL_SECONDS)
                pipe.delete(_row_key(user_id))
            pipe.execute()
        except redis.RedisError as exc:
            logger.error(
                "user cache not invalidated", extra={"user_ids": sorted(map(str, user_ids)), "error": str(exc)}
            )


def track_user_changes(database: Database, cache: UserCache) -> None:
    """Invalidate the cached copy of every user changed by a commit of `database`'s sessions."""
    for factory in database.factories:
        event.listen(factory, "after_flush", _collect_changed_users)
        event.listen(factory, "after_commit", lambda session: _invalidate_changed(session, cache))


def _collect_changed_users(session: Session, flush_context: UOWTransaction) -> None:
    changed = {obj.id for obj in (*session.new, *session.dirty, *session.deleted) if isinstance(obj, User)}
    if changed:
        session.info.setdefault(CHANGED, set()).update(changed)


def _invalidate_changed(session: Session, cache: UserCache) -> None:
    changed = session.info.pop(CHANGED, None)
    if changed:
        cache.invalidate(changed)


def _keys(user_id: uuid.UUID) -> tuple[str, str]:
    return _row_key(user_id), _generation_key(user_id)


def _row_key(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


def _generation_key(user_id: uuid.UUID) -> str:
    return f"usergen:{user_id}"


def _user_to_json(user: User) -> str:
    row = {
        attr.key: _encode(getattr(user, attr.key))
        for attr in User.__mapper__.column_attrs
        if attr.key not in UNCACHED_COLUMNS
    }
    return json.dumps(row, separators=(",", ":"))


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID | datetime):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return value


def _user_from_json(raw: bytes) -> User:
    row = json.loads(raw)
    user: User = User.__mapper__.class_manager.new_instance()
    for attr in User.__mapper__.column_attrs:
        if attr.key in UNCACHED_COLUMNS:
            continue
        set_committed_value(user, attr.key, _decode(attr.columns[0].type.python_type, row.get(attr.key)))
    return user


def _decode(python_type: type, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(value["b"])
    if python_type is uuid.UUID:
        return uuid.UUID(value)
    if python_type is datetime:
        return datetime.fromisoformat(value)
    if issubclass(python_type, enum.Enum):
        return python_type(value)
    return value
