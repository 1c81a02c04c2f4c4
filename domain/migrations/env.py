"""Alembic environment: runs migrations on a connection given by the caller or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from domain.core import models_registry
from domain.core.config import load_settings
from domain.core.db import Base, create_db_engine

models_registry.import_all()
target_metadata = Base.metadata


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    engine = create_db_engine(load_settings())
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
