"""/jobs: employers write and publish postings; every signed-in user searches the published ones."""

from __future__ import annotations

import uuid

import falcon

from domain.jobs import service as jobs
from domain.jobs.cache import ListingCache, ListingQuery, Lookup, track_job_changes
from domain.jobs.models import RemoteType
from domain.users.models import Role, User
from ingress.context import ApiRequest, Services
from ingress.endpoint import endpoint
from ingress.schemas.jobs import JobCreate, JobListQuery, JobOut, JobPage, JobUpdate

TAG = "jobs"
EMPLOYERS = (Role.EMPLOYER,)


class JobList:
    def __init__(self, services: Services | None = None) -> None:
        """Serve public pages from the listing cache; without `services` (the OpenAPI route list), no cache."""
        self.cache: ListingCache | None = None
        if services is not None:
            self.cache = ListingCache(services.redis, services.settings.job_listing_cache_seconds)
            # Registered even with the cache off here: other processes may serve pages from Redis.
            track_job_changes(services.database, self.cache)

    @endpoint(
        "Published jobs (and your own), newest first: full-text `q` over titles, `location`, `remoteType`",
        tag=TAG,
        query=JobListQuery,
        response=JobPage,
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: JobListQuery = req.context.query
        cache = self._cache_for(req.context.user)
        key = ListingQuery(query.q, query.location, query.remote_type, query.cursor, query.limit)
        found = cache.get(key) if cache is not None else Lookup(None, None)
        if found.body is not None:
            resp.content_type = falcon.MEDIA_JSON
            resp.data = found.body
            resp.set_header("X-Cache", "hit")
            return
        search = jobs.JobSearch(
            q=query.q, location=query.location, remote_type=RemoteType(query.remote_type) if query.remote_type else None
        )
        user = req.context.user
        listing = jobs.browse_jobs(req.context.session, user, search, cursor=query.cursor, limit=query.limit)
        page = listing.page
        items = [JobOut.of(job, user.id) for job in page.items]
        resp.media = JobPage(items=items, next_cursor=page.next_cursor).to_json()
        if cache is not None:
            # Shared only without the viewer's own postings (their drafts, their analyses).
            if listing.public:
                # The bytes Falcon sends: a hit answers exactly what this miss did.
                cache.put(key, resp.render_body() or b"", found.generation, listing.stable_until)
            resp.set_header("X-Cache", "miss")

    def _cache_for(self, viewer: User) -> ListingCache | None:
        # An employer's listing holds their own drafts: only other viewers share pages.
        if self.cache is None or not self.cache.enabled or viewer.role == Role.EMPLOYER:
            return None
        return self.cache

    @endpoint(
        "Write a job posting (a draft until published)",
        tag=TAG,
        body=JobCreate,
        response=JobOut,
        status=201,
        roles=EMPLOYERS,
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        body: JobCreate = req.context.input
        draft = jobs.JobDraft(
            title=body.title,
            description=body.description,
            remote_type=RemoteType(body.remote_type),
            requirements=body.requirements,
            location=body.location,
            salary_range=body.salary_range.model_dump() if body.salary_range else None,
            expires_at=body.expires_at,
        )
        job = jobs.create_job(req.context.session, req.context.user, draft)
        req.context.session.flush()
        resp.media = JobOut.of(job, req.context.user.id).to_json()


class JobItem:
    @endpoint("A published job, or one of your own", tag=TAG, response=JobOut, read_only=True)
    def on_get(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        job = jobs.visible_job(req.context.session, req.context.user, job_id)
        resp.media = JobOut.of(job, req.context.user.id).to_json()

    @endpoint(
        "Change your draft or published job", tag=TAG, body=JobUpdate, response=JobOut, roles=EMPLOYERS, errors=(409,)
    )
    def on_patch(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        body: JobUpdate = req.context.input
        changes = body.changes()
        if "remote_type" in changes:
            changes["remote_type"] = RemoteType(changes["remote_type"])
        job = jobs.update_job(req.context.session, req.context.user, job_id, changes)
        req.context.session.flush()
        resp.media = JobOut.of(job, req.context.user.id).to_json()

    @endpoint("Delete your job (it leaves every listing)", tag=TAG, status=204, roles=EMPLOYERS)
    def on_delete(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        jobs.delete_job(req.context.session, req.context.user, job_id)


class JobPublish:
    @endpoint("Publish your draft job", tag=TAG, response=JobOut, roles=EMPLOYERS, errors=(409,))
    def on_post(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        job = jobs.publish_job(req.context.session, req.context.user, job_id)
        req.context.session.flush()
        resp.media = JobOut.of(job, req.context.user.id).to_json()


class JobClose:
    @endpoint("Close your published job", tag=TAG, response=JobOut, roles=EMPLOYERS, errors=(409,))
    def on_post(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        job = jobs.close_job(req.context.session, req.context.user, job_id)
        req.context.session.flush()
        resp.media = JobOut.of(job, req.context.user.id).to_json()
