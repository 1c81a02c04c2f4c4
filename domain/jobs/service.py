"""What employers do with their postings, and how everyone finds the published ones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, CompoundSelect, Select, and_, func, not_, or_, select, tuple_, union_all
from sqlalchemy.orm import Session, joinedload

from domain.core.db import utcnow
from domain.core.errors import Conflict, InvalidInput, NotFound
from domain.core.pagination import Cursor, Page, decode_cursor, encode_cursor
from domain.jobs.models import Job, JobStatus, RemoteType
from domain.users.models import User

EDITABLE = frozenset({JobStatus.DRAFT, JobStatus.PUBLISHED})
# Fields `update_job` may change; the encrypted ones are set through their attributes.
EXPIRY_BATCH = 100
CHANGEABLE = ("title", "description", "requirements", "location", "remote_type", "salary_range", "expires_at")
# The listing's keyset order.
NEWEST_FIRST = (Job.created_at.desc(), Job.id.desc())


@dataclass(frozen=True)
class JobDraft:
    """A new posting, as validated by the API."""

    title: str
    description: str
    remote_type: RemoteType
    requirements: list[str] | None = None
    location: str | None = None
    salary_range: dict[str, Any] | None = None
    expires_at: datetime | None = None


def create_job(session: Session, employer: User, draft: JobDraft) -> Job:
    """Create a posting as a draft (visible to its employer only until published)."""
    _check_expiry(draft.expires_at)
    now = utcnow()
    job = Job(
        employer=employer,
        status=JobStatus.DRAFT,
        title=draft.title,
        description=draft.description,
        requirements=draft.requirements,
        location=draft.location,
        remote_type=draft.remote_type,
        salary_range=draft.salary_range,
        expires_at=draft.expires_at,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    return job


def own_job(session: Session, employer: User, job_id: uuid.UUID, *, lock: bool = False) -> Job:
    """The employer's own (not deleted) posting; raises NotFound for any other."""
    job = session.get(Job, job_id, with_for_update=lock)
    if job is None or job.employer_id != employer.id or job.deleted_at is not None:
        raise NotFound("job not found")
    return job


def visible_job(session: Session, viewer: User, job_id: uuid.UUID) -> Job:
    """A published posting, or one of the viewer's own; raises NotFound otherwise."""
    job = session.scalars(_visible_to(viewer).where(Job.id == job_id)).first()
    if job is None:
        raise NotFound("job not found")
    return job


def update_job(session: Session, employer: User, job_id: uuid.UUID, changes: dict[str, Any]) -> Job:
    """Change a draft or published posting; raises Conflict once it is closed or expired."""
    job = own_job(session, employer, job_id, lock=True)
    if job.status not in EDITABLE:
        raise Conflict(f"this job is {job.status.value}; only a draft or published job can be changed")
    if "expires_at" in changes:
        _check_expiry(changes["expires_at"])
    for name in CHANGEABLE:
        if name in changes:
            setattr(job, name, changes[name])
    job.updated_at = utcnow()
    return job


def delete_job(session: Session, employer: User, job_id: uuid.UUID) -> None:
    """Remove a posting from every listing (kept, marked deleted, for the references pointing at it)."""
    job = own_job(session, employer, job_id, lock=True)
    job.deleted_at = job.updated_at = utcnow()


def publish_job(session: Session, employer: User, job_id: uuid.UUID) -> Job:
    """Make a draft visible to everyone; raises Conflict unless it is a draft, InvalidInput if already past expiry."""
    job = own_job(session, employer, job_id, lock=True)
    if job.status != JobStatus.DRAFT:
        raise Conflict(f"this job is {job.status.value}; only a draft can be published")
    _check_expiry(job.expires_at)
    job.status = JobStatus.PUBLISHED
    job.posted_at = job.updated_at = utcnow()
    return job


def close_job(session: Session, employer: User, job_id: uuid.UUID) -> Job:
    """Stop a published posting from taking candidates; raises Conflict unless it is published."""
    job = own_job(session, employer, job_id, lock=True)
    if job.status != JobStatus.PUBLISHED:
        raise Conflict(f"this job is {job.status.value}; only a published job can be closed")
    job.status = JobStatus.CLOSED
    job.closed_at = job.updated_at = utcnow()
    return job


@dataclass(frozen=True)
class JobSearch:
    q: str | None = None
    location: str | None = None
    remote_type: RemoteType | None = None


def list_jobs(session: Session, viewer: User, search: JobSearch, *, cursor: str | None, limit: int) -> Page[Job]:
    """Published postings (and the viewer's own), newest first, keyset-paginated.

    `q` is a full-text search over titles (web-search syntax: words, "phrases", -exclusions);
    `location` matches regardless of case.
    """
    return browse_jobs(session, viewer, search, cursor=cursor, limit=limit).page


@dataclass(frozen=True)
class Listing:
    """A page of `list_jobs`, with what a cache of it must know."""

    page: Page[Job]
    # Time alone changes the page when a posting on it, or the one right after it (which
    # decides whether there is a next page), expires; None when none of them has an expiry.
    stable_until: datetime | None
    # None of the postings read is the viewer's own: the page is the same for every viewer
    # who owns no posting, so it may be shared.
    public: bool


def browse_jobs(session: Session, viewer: User, search: JobSearch, *, cursor: str | None, limit: int) -> Listing:
    """The page `list_jobs` returns, with until when it holds and whether it depends on the viewer.

    Raises InvalidInput for a cursor that is not a nextCursor of an earlier page.
    """
    after = decode_cursor(cursor) if cursor else None
    # One posting beyond the page: it decides whether there is a next page.
    fetched = list(session.scalars(listing_query(viewer, search, after, limit + 1)))
    shown = fetched[:limit]
    next_cursor = encode_cursor(shown[-1].created_at, shown[-1].id) if len(fetched) > limit else None
    return Listing(
        page=Page(shown, next_cursor),
        stable_until=min((job.expires_at for job in fetched if job.expires_at is not None), default=None),
        public=all(job.employer_id != viewer.id for job in fetched),
    )


def listing_query(viewer: User, search: JobSearch, after: Cursor | None, rows: int) -> Select[Job]:
    """The statement `list_jobs` sends: the first `rows` postings after `after` it lists, newest first."""
    page = _matches_page(viewer, search, after, rows) if search.q else _listing_page(viewer, search, after, rows)
    # The page's ids first, then their rows with their employers: joining before the page is
    # cut would join (and sort) every match.
    query = select(Job).where(Job.id.in_(page))
    return query.order_by(*NEWEST_FIRST).limit(rows).options(joinedload(Job.employer))


def _matches_page(viewer: User, search: JobSearch, after: Cursor | None, rows: int) -> Select[Any]:
    # The GIN index finds the matches, sorted afterwards: an ordered index scan filtering on a
    # word rarer than the planner thinks would read the whole index.
    visible = select(Job.id).where(Job.deleted_at.is_(None), or_(_live(), Job.employer_id == viewer.id))
    return _matching(visible, search, after).order_by(*NEWEST_FIRST).limit(rows)


def _listing_page(viewer: User, search: JobSearch, after: Cursor | None, rows: int) -> CompoundSelect[Any]:
    # Published postings and the viewer's other ones each walk their own ordered index
    # (ix_jobs_published_created_at, ix_jobs_employer_id_created_at) and stop after `rows`:
    # one scan of their OR could use neither and would sort every published posting.
    public = select(Job.id).where(Job.deleted_at.is_(None), _live())
    own = select(Job.id).where(Job.deleted_at.is_(None), Job.employer_id == viewer.id, not_(_live()))
    return union_all(*(_matching(part, search, after).order_by(*NEWEST_FIRST).limit(rows) for part in (public, own)))


Q = TypeVar("Q", bound=Select[Any])


def _matching(query: Q, search: JobSearch, after: Cursor | None) -> Q:
    if search.q:
        query = query.where(Job.search.op("@@")(func.websearch_to_tsquery("simple", search.q)))
    if search.location:
        query = query.where(func.lower(Job.location) == search.location.lower())
    if search.remote_type is not None:
        query = query.where(Job.remote_type == search.remote_type)
    if after is not None:
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(after.created_at, after.id))
    return query


def _live() -> ColumnElement[bool]:
    # A published job past its expiry is hidden at once, before beat marks it expired.
    return and_(Job.status == JobStatus.PUBLISHED, or_(Job.expires_at.is_(None), Job.expires_at > func.now()))


def _visible_to(viewer: User) -> Select[Job]:
    return select(Job).where(Job.deleted_at.is_(None), or_(_live(), Job.employer_id == viewer.id))


def _check_expiry(expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= utcnow():
        message = "must be in the future"
        raise InvalidInput(f"expiresAt: {message}", details=[{"field": "expiresAt", "message": message}])


def expire_jobs(session: Session, *, now: datetime | None = None, batch: int = EXPIRY_BATCH) -> int:
    """Mark published postings past their `expiresAt` expired (run by beat); return how many."""
    now = now or utcnow()
    due = list(
        session.scalars(
            select(Job)
            .where(Job.status == JobStatus.PUBLISHED, Job.expires_at <= now)
            .order_by(Job.expires_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    )
    for job in due:
        job.status = JobStatus.EXPIRED
        job.closed_at = job.updated_at = now
    return len(due)
