"""/jobs/{id}/analysis: an employer asks for an AI analysis of their posting."""

from __future__ import annotations

import uuid

import falcon

from domain.jobs import analysis
from domain.users.models import Role
from ingress.context import ApiRequest
from ingress.endpoint import endpoint
from ingress.schemas.operations import Accepted, OperationOut


class JobAnalysisRequest:
    @endpoint(
        "Analyse your draft or published job (skills, seniority, clarity, exclusionary wording, salary): "
        "the result lands on the job and comes as a `job.analysed` event",
        tag="jobs",
        response=Accepted,
        status=202,
        roles=(Role.EMPLOYER,),
        errors=(404, 409),
    )
    def on_post(self, req: ApiRequest, resp: falcon.Response, job_id: uuid.UUID) -> None:
        operation = analysis.request_analysis(req.context.session, req.context.user, job_id)
        req.context.session.flush()
        resp.media = Accepted(operation=OperationOut.of(operation)).to_json()
