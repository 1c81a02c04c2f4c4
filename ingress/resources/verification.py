"""/users/me/{email,phone}-verification: prove control of an address or number with a code."""

from __future__ import annotations

import falcon

from domain.verification import service as verification
from domain.verification.models import Channel
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.operations import Accepted, CodeConfirmation, OperationOut
from ingress.schemas.users import UserOut

TAG = "users"


class VerificationRequest:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @endpoint(
        "Send a six-digit code to your email address or phone number",
        tag=TAG,
        response=Accepted,
        status=202,
        errors=(409, 429),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        operation = verification.request_code(
            req.context.session, req.context.user, self.channel, request_id=req.context.request_id
        )
        req.context.session.flush()
        resp.media = Accepted(operation=OperationOut.of(operation)).to_json()


class VerificationConfirm:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @endpoint("Confirm the code you received", tag=TAG, body=CodeConfirmation, response=UserOut, errors=(409,))
    def on_post(self, req: ApiRequest, resp: falcon.Response) -> None:
        # The check runs in its own transaction (a wrong guess must count even though it is an
        # error); release the request's connection first rather than hold two at once.
        user_id = req.context.user.id
        req.context.close_session(commit=False)
        database = req.context.services.database
        user = verification.confirm_code(database, user_id, self.channel, req.context.input.code)
        resp.media = UserOut.of(user).to_json()
