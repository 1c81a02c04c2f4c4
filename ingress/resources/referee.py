"""/referee/{token}: the referee's side, by link and without an account.

Rate-limited per link and per client IP on top of the per-route limit, so a link cannot
be hammered and one client cannot walk through many links. The token never reaches a
log line or a Redis key: the access log names the route template, the limiter a hash.
"""

from __future__ import annotations

import falcon

from domain.core.crypto import hash_token
from domain.references import referee
from domain.references.referee import AnswerInput
from ingress.context import ApiRequest
from ingress.endpoint import endpoint, parse_body
from ingress.middleware import enforce
from ingress.resources.references import visitor
from ingress.schemas.operations import Accepted, OperationOut
from ingress.schemas.references import DeclineIn, QuestionOut, RefereeQuestionnaire, ResponseIn

TAG = "referee"
BUCKET = "referee"


def limit_link_and_client(req: ApiRequest, resp: falcon.Response, token: str) -> None:
    """Count the request against its link (the per-minute limit) and its client IP (twice that)."""
    limit = req.context.services.settings.referee_rate_limit_per_minute
    enforce(req, resp, BUCKET, f"link:{hash_token(token).hex()[:32]}", limit)
    enforce(req, resp, BUCKET, f"ip:{req.context.client_ip}", 2 * limit)


class RefereeQuestionnaireResource:
    @endpoint(
        "The questionnaire behind a referee link (the first visit marks the request opened)",
        tag=TAG,
        response=RefereeQuestionnaire,
        auth=False,
        errors=(404,),
    )
    def on_get(self, req: ApiRequest, resp: falcon.Response, token: str) -> None:
        limit_link_and_client(req, resp, token)
        reference, questions = referee.open_questionnaire(req.context.session, token, visitor(req))
        shown = RefereeQuestionnaire(
            candidate={"name": reference.candidate.name or ""},
            referrer={"name": reference.referrer["name"]},
            relationship=reference.relation.value,
            expires_at=reference.expires_at,
            questions=[QuestionOut(**q.to_json()) for q in questions],
        )
        resp.media = shown.to_json()


class RefereeResponse:
    @endpoint(
        "Answer the questionnaire and agree to its sharing; verification runs in the background",
        tag=TAG,
        body=ResponseIn,
        response=Accepted,
        status=202,
        auth=False,
        errors=(404, 409),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, token: str) -> None:
        limit_link_and_client(req, resp, token)
        body: ResponseIn = req.context.input
        answers = [AnswerInput(a.question_id, a.rating, a.text) for a in body.answers]
        _, operation = referee.submit_response(req.context.session, token, answers, visitor(req))
        req.context.session.flush()
        resp.media = Accepted(operation=OperationOut.of(operation)).to_json()


class RefereeDecline:
    @endpoint(
        'Decline to give the reference; the body is optional: {"reason": "…"}',
        tag=TAG,
        status=204,
        auth=False,
        errors=(404, 409),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, token: str) -> None:
        limit_link_and_client(req, resp, token)
        reason = parse_body(req, DeclineIn).reason if req.context.body.strip() else None
        referee.decline(req.context.session, token, reason or None, visitor(req))
