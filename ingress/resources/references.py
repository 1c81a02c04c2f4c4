"""/references: candidates request, follow, remind, revoke and share; employers and referrers read."""

from __future__ import annotations

import uuid
from typing import Any

import falcon

from domain.operations.models import Operation
from domain.references import service as references
from domain.references import sharing, verification
from domain.references.lifecycle import Visitor
from domain.references.models import Reference, ReferenceStatus, Relationship
from domain.references.questionnaires import CustomQuestion
from domain.users.models import Role, User
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.operations import Accepted, OperationOut
from ingress.schemas.references import (
    ReferenceAccepted,
    ReferenceCreate,
    ReferenceListQuery,
    ReferenceOut,
    ReferencePage,
    ShareCreate,
    ShareOut,
)

TAG = "references"
CANDIDATES = (Role.JOB_SEEKER,)
READERS = (Role.JOB_SEEKER, Role.EMPLOYER, Role.REFERRER)
# Longest user agent kept for the fraud signals.
MAX_USER_AGENT = 512


def visitor(req: ApiRequest) -> Visitor:
    """The caller as the server sees them (kept sealed with the reference, for fraud signals)."""
    return Visitor(ip=req.context.client_ip, user_agent=(req.user_agent or "")[:MAX_USER_AGENT])


class ReferenceList:
    @endpoint(
        "References you may read, newest first: your own (candidate), those shared with you (employer), "
        "those addressed to your verified email (referrer)",
        tag=TAG,
        query=ReferenceListQuery,
        response=ReferencePage,
        roles=READERS,
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: ReferenceListQuery = req.context.query
        viewer = req.context.user
        page = references.list_references(
            req.context.session,
            viewer,
            status=ReferenceStatus(query.status) if query.status else None,
            cursor=query.cursor,
            limit=query.limit,
        )
        items = [ReferenceOut.of(r, references.audience_of(r, viewer)) for r in page.items]
        resp.media = {"items": [item.to_json() for item in items], "nextCursor": page.next_cursor}

    @endpoint(
        "Ask a referrer for a reference: they get a link by email and/or SMS",
        tag=TAG,
        body=ReferenceCreate,
        response=ReferenceAccepted,
        status=202,
        roles=CANDIDATES,
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        body: ReferenceCreate = req.context.input
        draft = references.ReferenceRequest(
            referrer_name=body.referrer.name,
            referrer_email=str(body.referrer.email) if body.referrer.email else None,
            referrer_phone=body.referrer.phone,
            relationship=Relationship(body.relationship),
            channels=tuple(body.channels) if body.channels is not None else None,
            job_id=body.job_id,
            custom_questions=[CustomQuestion(q.text, q.kind, q.required) for q in body.questions],
        )
        reference, operations = references.request_reference(
            req.context.session,
            req.context.user,
            draft,
            visitor(req),
            link_base=req.context.services.settings.public_base_url,
        )
        req.context.session.flush()
        resp.media = _accepted(reference, operations)


def _accepted(reference: Reference, operations: list[Operation]) -> dict[str, Any]:
    shown = [OperationOut.of(o) for o in operations]
    body = ReferenceAccepted(
        reference=ReferenceOut.of(reference, "candidate", []), operation=shown[0], operations=shown
    )
    data = body.to_json()
    data["reference"] = body.reference.to_json()
    return data


class ReferenceItem:
    @endpoint("One reference you may read", tag=TAG, response=ReferenceOut, roles=READERS, read_only=True)
    def on_get(self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID) -> None:
        viewer = req.context.user
        session = req.context.session
        reference = references.visible_reference(session, viewer, reference_id)
        seen_as = references.audience_of(reference, viewer)
        shares = None
        if seen_as == "candidate":
            shares = [ShareOut.of(share, employer) for share, employer in sharing.active_shares(session, reference)]
        resp.media = ReferenceOut.of(reference, seen_as, shares).to_json()


class ReferenceReminders:
    @endpoint(
        "Remind the referee (at most once a day and 3 times); each reminder carries a fresh link",
        tag=TAG,
        response=ReferenceAccepted,
        status=202,
        roles=CANDIDATES,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID) -> None:
        session = req.context.session
        operations = references.send_reminder(
            session, req.context.user, reference_id, link_base=req.context.services.settings.public_base_url
        )
        session.flush()
        resp.media = _accepted(references.own_reference(session, req.context.user, reference_id), operations)


class ReferenceRevoke:
    @endpoint(
        "Withdraw a reference: its links stop working and employers no longer see it",
        tag=TAG,
        response=ReferenceOut,
        roles=CANDIDATES,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID) -> None:
        reference = references.revoke(req.context.session, req.context.user, reference_id)
        resp.media = ReferenceOut.of(reference, "candidate").to_json()


class ReferenceShares:
    @endpoint(
        "Share a verified or flagged reference with a registered employer (by id or email)",
        tag=TAG,
        body=ShareCreate,
        response=ShareOut,
        status=201,
        roles=CANDIDATES,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID) -> None:
        body: ShareCreate = req.context.input
        share, _ = sharing.share(
            req.context.session,
            req.context.user,
            reference_id,
            employer_id=body.employer_id,
            employer_email=str(body.employer_email) if body.employer_email else None,
        )
        req.context.session.flush()
        employer = req.context.session.get(User, share.employer_id)
        assert employer is not None  # the share was just checked against it
        resp.media = ShareOut.of(share, employer).to_json()


class ReferenceShareItem:
    @endpoint("Stop sharing a reference with an employer", tag=TAG, status=204, roles=CANDIDATES)
    def on_delete(
        self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID, employer_id: uuid.UUID
    ) -> None:
        sharing.unshare(req.context.session, req.context.user, reference_id, employer_id)


class ReferenceVerification:
    @endpoint(
        "Verify a submitted reference again, after its verification failed (e.g. AI limits reached)",
        tag=TAG,
        response=Accepted,
        status=202,
        roles=CANDIDATES,
        errors=(409,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, reference_id: uuid.UUID) -> None:
        operation = verification.retry_verification(req.context.session, req.context.user, reference_id)
        req.context.session.flush()
        resp.media = Accepted(operation=OperationOut.of(operation)).to_json()
