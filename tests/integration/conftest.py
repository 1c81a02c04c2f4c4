"""Integration fixtures: the ingress publishes to a list, and a worker runs what it published."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from domain.ai.features import build_features
from domain.core.config import Settings
from domain.core.db import Database
from domain.core.events import EventPublisher
from domain.notifications.providers import FileEmailOutbox, FileSmsOutbox
from domain.operations.dispatch import Dispatcher, OutgoingTask
from ingress.app import create_app
from tasks import runtime as worker_runtime
from tasks.app import app as celery_app


@pytest.fixture
def published() -> list[OutgoingTask]:
    return []


@pytest.fixture
def app(settings: Settings, database: Database, redis_client: redis.Redis, published: list[OutgoingTask]) -> Any:
    return create_app(settings, database=database, redis_client=redis_client, task_sender=published.append)


class Worker:
    """Runs published tasks through the real task code, as a worker process would."""

    def __init__(self, runtime: worker_runtime.Runtime, inbox: list[OutgoingTask], var_dir: Path) -> None:
        self.runtime = runtime
        self.inbox = inbox
        self.var_dir = var_dir

    def run(self, task: OutgoingTask) -> None:
        # As a worker delivers it: the task id is the outbox id.
        celery_app.tasks[task.name].apply(kwargs=task.kwargs, task_id=str(task.id))

    def drain(self) -> int:
        """Run every task published so far (including those the tasks publish); return how many."""
        count = 0
        while self.inbox:
            self.run(self.inbox.pop(0))
            count += 1
        return count


@pytest.fixture
def worker(
    settings: Settings, connection: Any, redis_client: redis.Redis, published: list[OutgoingTask], tmp_path: Path
) -> Iterator[Worker]:
    database = Database(connection)
    dispatcher = Dispatcher(database, published.append, EventPublisher(redis_client)).install()
    email = FileEmailOutbox(tmp_path / "mail", settings.email_from)
    sms = FileSmsOutbox(tmp_path / "sms", settings.sms_from)
    ai = build_features(settings, database, redis_client)
    runtime = worker_runtime.Runtime(settings, database, redis_client, dispatcher, email, sms, ai)
    worker_runtime._current[os.getpid()] = runtime
    celery_app.loader.import_default_modules()  # register the task modules, as a worker does at start
    yield Worker(runtime, published, tmp_path)
    worker_runtime._current.clear()
