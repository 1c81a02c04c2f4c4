"""/operations: the caller's asynchronous requests; /events/tickets for the relay."""

from __future__ import annotations

import uuid

import falcon

from domain.core import events
from domain.operations import service as operations
from domain.operations.models import OperationStatus
from domain.users.models import Role
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.operations import Accepted, OperationListQuery, OperationOut, OperationPage, TicketOut

TAG = "operations"


class OperationList:
    @endpoint(
        "Your operations, newest first", tag=TAG, query=OperationListQuery, response=OperationPage, read_only=True
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response) -> None:
        query: OperationListQuery = req.context.query
        page = operations.list_for_owner(
            req.context.session,
            req.context.user,
            status=OperationStatus(query.status) if query.status else None,
            cursor=query.cursor,
            limit=query.limit,
        )
        resp.media = OperationPage(
            items=[OperationOut.of(o) for o in page.items], next_cursor=page.next_cursor
        ).to_json()


class OperationItem:
    @endpoint(
        "One of your operations: status, attempts, result or error",
        tag=TAG,
        response=OperationOut,
        errors=(404,),
        read_only=True,
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response, operation_id: uuid.UUID) -> None:
        operation = operations.get_for_owner(req.context.session, req.context.user, operation_id)
        resp.media = OperationOut.of(operation).to_json()


class OperationCancel:
    @endpoint("Cancel a queued operation", tag=TAG, response=OperationOut, errors=(404, 409))
    def on_post(self, req: ApiRequest, resp: falcon.Response, operation_id: uuid.UUID) -> None:
        operation = operations.cancel(req.context.session, req.context.user.id, operation_id)
        resp.media = OperationOut.of(operation).to_json()


class OperationProbe:
    @endpoint(
        "Send a no-op operation through broker, worker and relay (admin): a pipeline check",
        tag=TAG,
        response=Accepted,
        status=202,
        roles=(Role.ADMIN,),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        operation = operations.start_probe(req.context.session, req.context.user.id, req.context.request_id)
        req.context.session.flush()
        resp.media = Accepted(operation=OperationOut.of(operation)).to_json()


class EventTickets:
    @endpoint(
        "A single-use ticket (30 s) for opening the event stream without headers",
        tag="realtime",
        response=TicketOut,
        status=201,
        read_only=True,
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        ticket = events.issue_ticket(req.context.services.redis, req.context.user.id)
        resp.media = TicketOut(ticket=ticket, expires_in=events.TICKET_TTL_SECONDS).to_json()
