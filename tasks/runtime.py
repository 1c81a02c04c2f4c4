"""What a worker process needs, built once per process (after the prefork fork)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis

from domain.ai.features import AiFeatures, build_features
from domain.core.config import Settings, load_settings
from domain.core.crypto import KeyRing
from domain.core.db import Database
from domain.core.encrypted import install_keyring
from domain.core.events import EventPublisher
from domain.core.redis import create_redis
from domain.jobs.cache import ListingCache, track_job_changes
from domain.notifications.providers import EmailProvider, SmsProvider, email_provider, sms_provider
from domain.operations.dispatch import Dispatcher, OutgoingTask
from domain.users.cache import UserCache, track_user_changes
from tasks.app import app


@dataclass
class Runtime:
    settings: Settings
    database: Database
    redis: redis.Redis
    dispatcher: Dispatcher
    email: EmailProvider
    sms: SmsProvider
    ai: AiFeatures


_current: dict[int, Runtime] = {}


def send_task(task: OutgoingTask) -> None:
    """Publish one outbox task through the worker's own broker connection."""
    app.send_task(task.name, kwargs=task.kwargs, task_id=str(task.id), queue=task.queue, eta=task.eta, retry=False)


def runtime() -> Runtime:
    """This process's runtime; a forked child builds its own (connections do not survive a fork)."""
    pid = os.getpid()
    if pid not in _current:
        _current.clear()
        _current[pid] = build_runtime(load_settings())
    return _current[pid]


def build_runtime(settings: Settings) -> Runtime:
    install_keyring(KeyRing(settings.master_key))
    database = Database.from_settings(settings)
    client = create_redis(settings)
    track_user_changes(database, UserCache(client, settings.master_key))
    track_job_changes(database, ListingCache(client, settings.job_listing_cache_seconds))
    dispatcher = Dispatcher(database, send_task, EventPublisher(client)).install()
    return Runtime(
        settings,
        database,
        client,
        dispatcher,
        email_provider(settings),
        sms_provider(settings),
        build_features(settings, database, client),
    )
