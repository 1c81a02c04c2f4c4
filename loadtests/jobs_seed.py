"""The postings loadtests/jobs_bench.py searches: many, varied, and readable by the ingress.

Employers (and one job seeker, the viewer of the query plans) are registered through the
domain; the postings are written in one COPY stream. Titles are "[seniority] field role"
with fields drawn Zipf-like (a few common, many rarer, a handful of rare words), cities
with a share of none, remote types, created over 90 days; most are published, some are
drafts, closed, expired or deleted, and a few published ones are already past their expiry
(hidden at once, not yet marked by beat). Each description is sealed with its employer's
data key by the domain's encryption: the row id is part of the associated data, so one
ciphertext cannot serve several rows (each is sealed separately; AES-GCM takes microseconds).
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import redis
from sqlalchemy.engine import make_url

from domain.core.config import load_settings
from domain.core.crypto import KeyRing, seal
from domain.core.db import Database, utcnow
from domain.core.encrypted import Encrypted, install_keyring
from domain.jobs.cache import ListingCache
from domain.jobs.models import Job
from domain.users import service as users
from domain.users.models import Role, User
from loadtests.servers import PASSWORD

EMPLOYERS = 200
SENIORITY = (("", 40), ("Senior", 25), ("Junior", 10), ("Lead", 8), ("Staff", 6), ("Principal", 4), ("Head of", 2))


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIELDS = words(
    "Python Java Go Rust Data Frontend Backend DevOps Cloud Mobile Security QA Embedded Kotlin Scala Ruby PHP iOS "
    "Android Platform Network Salesforce SAP Marketing Sales Product Finance Support Growth"
)
FIELD_WEIGHTS = list(itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(len(FIELDS))))
ROLES = words("Engineer Developer Analyst Architect Manager Scientist Consultant Designer Administrator Specialist")
RARE = ("Quantum", "Bioinformatics", "Cobol", "Photonics")
RARE_SHARE = 0.0005
CITIES = words(
    "Berlin London Paris Amsterdam Madrid Lisbon Warsaw Vienna Zurich Dublin Munich Hamburg Milan Prague Stockholm "
    "Oslo Copenhagen Brussels Barcelona Lyon Toronto Austin Boston Seattle Singapore"
)
NO_CITY_SHARE = 0.15
REMOTE = (("onsite", 50), ("hybrid", 30), ("remote", 20))
STATUSES = (("published", 85), ("draft", 6), ("closed", 5), ("expired", 4))
DELETED_SHARE = 0.01
WITH_EXPIRY_SHARE = 0.4
PAST_EXPIRY_SHARE = 0.02  # of the published postings with an expiry
DAY = 86_400.0
COLUMNS = (
    "id, employer_id, status, title, location, remote_type, description, created_at, updated_at, posted_at, "
    "expires_at, closed_at, deleted_at"
)
# The domain's own sealing of job descriptions (its associated data names the table, column and row).
DESCRIPTION: Encrypted[str] = vars(Job)["description"]


@dataclass(frozen=True)
class Seeded:
    database: Database
    searcher: User
    employers: int
    postings: int
    seconds: float


@dataclass
class _Row:
    """A stand-in posting: what the domain's descriptor needs to seal a value for row `id`."""

    id: uuid.UUID
    key: bytes

    def data_key(self) -> bytes:
        return self.key


def seed(env: Mapping[str, str], postings: int) -> Seeded:
    """Register the employers and a searcher through the domain, COPY the postings, VACUUM ANALYZE."""
    started = time.monotonic()
    settings = load_settings(env)
    install_keyring(KeyRing(settings.master_key))
    database = Database.from_settings(settings)
    accounts = users.Accounts.from_settings(settings)

    def account(name: str, role: Role) -> User:
        email = f"{name}@bench.example"
        return users.register(session, accounts, email=email, password=PASSWORD, role=role, name=name)[0]

    with database.transaction() as session:
        employers = [account(f"employer-{n}", Role.EMPLOYER) for n in range(EMPLOYERS)]
        searcher = account("searcher", Role.JOB_SEEKER)
    keys = [(employer.id, employer.data_key()) for employer in employers]
    rng, now = random.Random(20_240), utcnow()
    url = make_url(settings.require_database_url()).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY jobs ({COLUMNS}) FROM STDIN") as copy:
            for _ in range(postings):
                copy.write_row(posting(rng, keys, now))
        connection.commit()
        # As autovacuum would soon after: the GIN index's pending list merged, the statistics read.
        connection.autocommit = True
        cursor.execute("VACUUM ANALYZE jobs")
        cursor.execute("ANALYZE users")
    # Rows written behind the ORM's back: pages an earlier run cached must not be served.
    ListingCache(redis.Redis.from_url(settings.require_redis_url()), 0).invalidate()
    return Seeded(database, searcher, len(employers), postings, time.monotonic() - started)


def posting(rng: random.Random, employers: Sequence[tuple[uuid.UUID, bytes]], now: datetime) -> tuple[Any, ...]:
    """One row of COLUMNS."""
    job_id = uuid.uuid4()
    employer_id, key = rng.choice(employers)
    title = job_title(rng)
    status = pick(rng, STATUSES)
    created = now - timedelta(seconds=rng.uniform(60, 90 * DAY))
    posted = None if status == "draft" else min(now, created + timedelta(minutes=rng.uniform(1, 600)))
    expires, closed = lifetime(rng, status, posted or created, now)
    deleted = now - timedelta(seconds=rng.uniform(0, 60)) if rng.random() < DELETED_SHARE else None
    location = None if rng.random() < NO_CITY_SHARE else rng.choice(CITIES)
    text = f"{title} at a growing company. We value ownership, clear writing and kind reviews."
    description = seal(key, text.encode(), DESCRIPTION.associated_data(_Row(job_id, key)))
    remote = pick(rng, REMOTE)
    return (
        job_id,
        employer_id,
        status,
        title,
        location,
        remote,
        description,
        created,
        created,
        posted,
        expires,
        closed,
        deleted,
    )


def job_title(rng: random.Random) -> str:
    field = rng.choice(RARE) if rng.random() < RARE_SHARE else rng.choices(FIELDS, cum_weights=FIELD_WEIGHTS)[0]
    return " ".join(word for word in (pick(rng, SENIORITY), field, rng.choice(ROLES)) if word)


def lifetime(rng: random.Random, status: str, posted: datetime, now: datetime) -> tuple[Any, Any]:
    """(expires_at, closed_at) of a posting with `status`."""
    if status == "expired":
        expires = now - timedelta(seconds=rng.uniform(60, 30 * DAY))
        return expires, expires
    if status == "closed":
        return None, min(now, posted + timedelta(days=rng.uniform(1, 30)))
    if rng.random() >= WITH_EXPIRY_SHARE:
        return None, None
    if status == "published" and rng.random() < PAST_EXPIRY_SHARE:
        return now - timedelta(seconds=rng.uniform(60, 5 * DAY)), None
    return now + timedelta(seconds=rng.uniform(DAY, 120 * DAY)), None


def pick(rng: random.Random, weighted: Sequence[tuple[str, int]]) -> str:
    return rng.choices([value for value, _ in weighted], [weight for _, weight in weighted])[0]
