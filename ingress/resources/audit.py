"""/audit: the administrators' view of the tamper-evident trail."""

from __future__ import annotations

import falcon

from domain.audit import service as audit
from domain.core.errors import InvalidInput
from domain.users.models import Role
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.audit import AuditEntryOut, AuditPage, AuditQuery, AuditVerification

TAG = "audit"
ADMIN = (Role.ADMIN,)


class AuditVerify:
    @endpoint(
        "Check the whole hash chain and its anchors (admin)",
        tag=TAG,
        response=AuditVerification,
        roles=ADMIN,
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        resp.media = AuditVerification.of(audit.verify(req.context.session)).to_json()


class AuditEntries:
    @endpoint(
        "Audit entries, newest first (admin)",
        tag=TAG,
        query=AuditQuery,
        response=AuditPage,
        roles=ADMIN,
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: AuditQuery = req.context.query
        entries, next_before = audit.list_entries(
            req.context.session,
            action=query.action,
            subject_type=query.subject_type,
            subject_id=query.subject_id,
            before=_sequence(query.cursor),
            limit=query.limit,
        )
        page = AuditPage(items=[AuditEntryOut.of(e) for e in entries], next_cursor=_cursor(next_before))
        resp.media = page.to_json()


def _cursor(sequence: int | None) -> str | None:
    return None if sequence is None else f"s{sequence}"


def _sequence(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.startswith("s") or not cursor[1:].isdigit() or len(cursor) > 20:
        raise InvalidInput(
            "cursor: not a cursor from a previous page", details=[{"field": "cursor", "message": "invalid"}]
        )
    return int(cursor[1:])
