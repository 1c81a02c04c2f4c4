"""The service's engine checks connections out of the fair pool."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from domain.core import db
from domain.core.config import Settings
from domain.core.db import create_db_engine
from domain.core.pool import FairQueuePool


def test_the_engine_pool_uses_it(settings: Settings) -> None:
    engine = create_db_engine(settings)
    try:
        assert isinstance(engine.pool, FairQueuePool)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        assert engine.pool.checkedin() == 1
    finally:
        engine.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def test_a_connection_that_died_while_idle_is_replaced_before_use(settings: Settings, monkeypatch) -> None:
    monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)
    engine, admin = create_db_engine(settings), create_engine(settings.require_database_url(), poolclass=NullPool)
    try:
        dead = _backend_pid(engine)
        with admin.connect() as connection:  # as a server restart would, while the connection sat in the pool
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({dead})")
        assert _backend_pid(engine) != dead  # no error: the ping found it dead and a new one took over
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_in_steady_use_is_not_pinged(settings: Settings, monkeypatch) -> None:
    engine = create_db_engine(settings)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda connection: pings.append(connection) or real_ping(connection))
    try:
        first = _backend_pid(engine)
        assert [_backend_pid(engine) for _ in range(5)] == [first] * 5
        assert pings == []
        monkeypatch.setattr(db, "IDLE_PING_SECONDS", 0.0)  # now it counts as idle
        assert _backend_pid(engine) == first
        assert len(pings) == 1
    finally:
        engine.dispose()
