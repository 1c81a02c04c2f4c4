"""SQLAlchemy base, engine and sessions.

The engine is sized for gevent workers (about ten pooled connections per worker served
best here), checks a connection that sat idle in the pool before handing it out so a
restarted PostgreSQL is picked up by itself, and gives up quickly when the server is
unreachable so callers can answer 503.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Enum, MetaData, create_engine, event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from domain.core.config import Settings
from domain.core.pool import FairQueuePool

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Seconds: connecting to an unreachable server, and the longest statement we allow.
CONNECT_TIMEOUT = 1
STATEMENT_TIMEOUT_MS = 10_000
# A pooled connection idle this long is pinged before use. One in steady use is not: its
# last statement just worked, and a ping per checkout cost a round trip per request. A
# connection that breaks while busy fails its request (503) and SQLAlchemy then replaces
# every connection of the pool.
IDLE_PING_SECONDS = 2.0
IDLE_SINCE = "deepref.idle_since"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def pg_enum(kind: type[enum.Enum], name: str) -> Enum:
    """A PostgreSQL enum type named `name` holding the members' values (not their names)."""
    return Enum(kind, name=name, values_callable=lambda members: [m.value for m in members])


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_db_engine(settings: Settings, **overrides: Any) -> Engine:
    """Create the engine for `settings.database_url` with the service's pool settings."""
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        # No overflow: overflow connections are opened and closed under load, and every new
        # PostgreSQL connection forks a backend. Requests queue for a pooled one instead.
        "max_overflow": 0,
        # Waiting requests get connections in the order they asked (see pool.py).
        "poolclass": FairQueuePool,
        "pool_timeout": settings.db_pool_timeout,
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": CONNECT_TIMEOUT,
            # A server that vanished mid-query (no RST) fails in 2 s instead of hanging on TCP retries.
            "tcp_user_timeout": 2000,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "deepref",
        },
    }
    options.update(overrides)
    engine = create_engine(settings.require_database_url(), **options)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        # `info` starts empty on a new connection: only a reused, idle one is pinged.
        idle_since = record.info.get(IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another (a new one if need be).
            raise DisconnectionError("a pooled connection no longer answers") from exc

    event.listen(engine.pool, "checkin", checked_in)
    event.listen(engine.pool, "checkout", checked_out)


class Database:
    """Hands out sessions; tests build one bound to a connection inside a transaction."""

    def __init__(self, bind: Engine | Connection) -> None:
        self.bind = bind
        self._factory = sessionmaker(
            bind=bind,
            expire_on_commit=False,
            # Under a test's outer transaction, commits only release a savepoint.
            join_transaction_mode="create_savepoint",
        )
        # Reads need no transaction: autocommit saves the BEGIN and COMMIT round trips.
        reader = bind.execution_options(isolation_level="AUTOCOMMIT") if isinstance(bind, Engine) else bind
        self._read_factory = sessionmaker(bind=reader, expire_on_commit=False, join_transaction_mode="create_savepoint")

    @classmethod
    def from_settings(cls, settings: Settings, **engine_options: Any) -> Database:
        return cls(create_db_engine(settings, **engine_options))

    @property
    def factories(self) -> tuple[sessionmaker[Session], ...]:
        """Both session factories, for installing session event listeners."""
        return (self._factory, self._read_factory)

    def session(self, read_only: bool = False) -> Session:
        """A new session; `read_only` ones run each statement on its own (never write with them)."""
        return self._read_factory() if read_only else self._factory()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session whose work is committed on success and rolled back on error."""
        with self._factory() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Run a trivial query; raises sqlalchemy.exc.OperationalError when unreachable."""
        with self._factory() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if isinstance(self.bind, Engine):
            self.bind.dispose()
