"""Every migration upgrades, downgrades and upgrades again on an empty database."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from domain.core import migrate
from domain.core.config import Settings
from domain.core.db import Base
from tests.conftest import create_database, worker_id


def test_upgrade_downgrade_upgrade(servers, settings: Settings):
    url = create_database(servers.database_url, f"deepref_migrations_{worker_id()}")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            migrate.upgrade(connection)
        tables = set(inspect(engine).get_table_names())
        assert {"users", "refresh_tokens", "operations", "outbox", "idempotency_keys"} <= tables
        with engine.begin() as connection:
            migrate.downgrade(connection)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        with engine.begin() as connection:
            migrate.upgrade(connection)
            # The models and the migrations describe the same schema.
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert {"users", "outbox"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
