"""The service's engine checks connections out of the fair pool."""

from __future__ import annotations

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
