"""The `@endpoint` decorator: one declaration validates requests and documents them.

The request body, query and response models given here are the ones that validate
(422 with `details`) and the ones the OpenAPI document is generated from.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon
from pydantic import BaseModel, ValidationError

from domain.core.errors import AuthenticationFailed, NotFound
from domain.users import service as users
from domain.users.models import Role
from ingress.context import ApiRequest
from ingress.errors import ApiError

Responder = Callable[..., None]


@dataclass(frozen=True)
class EndpointSpec:
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    roles: tuple[Role, ...] = ()
    errors: tuple[int, ...] = field(default=())
    read_only: bool = False


def endpoint(
    summary: str,
    *,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: bool = True,
    roles: tuple[Role, ...] = (),
    errors: tuple[int, ...] = (),
    read_only: bool = False,
) -> Callable[[Responder], Responder]:
    """Declare an endpoint; `read_only` ones query without a transaction and must not write."""
    spec = EndpointSpec(summary, tag, body, query, response, status, auth, roles, errors, read_only)

    def decorate(responder: Responder) -> Responder:
        @functools.wraps(responder)
        def wrapped(resource: Any, req: ApiRequest, resp: falcon.Response, **params: Any) -> None:
            req.context.read_only = spec.read_only
            if spec.auth:
                authenticate(req, spec.roles)
            if spec.query is not None:
                req.context.query = parse_query(req, spec.query)
            if spec.body is not None:
                req.context.input = parse_body(req, spec.body)
            resp.status = spec.status
            responder(resource, req, resp, **params)

        wrapped.__endpoint__ = spec  # type: ignore[attr-defined]
        return wrapped

    return decorate


def endpoint_spec(resource: Any, method: str) -> EndpointSpec | None:
    """The declaration of `resource`'s responder for `method`, if it has one."""
    return getattr(getattr(resource, f"on_{method.lower()}", None), "__endpoint__", None)


def authenticate(req: ApiRequest, roles: tuple[Role, ...]) -> None:
    """Load the caller from their bearer token; 401 without one, 404 for a role mismatch.

    A caller without the role gets 404 rather than 403 so admin routes are not advertised.
    """
    ctx = req.context
    if ctx.token_subject is None:
        raise AuthenticationFailed(getattr(ctx, "token_error", None) or "authentication required")
    user_id = uuid.UUID(ctx.token_subject)
    if ctx.read_only:
        user = users.cached_active_user(ctx.services.user_cache, user_id, lambda: ctx.session, ctx.prefetched_caller)
    else:
        user = users.active_user(ctx.session, user_id)
    if roles and user.role not in roles:
        raise NotFound("not found")
    ctx.user = user


def parse_body(req: ApiRequest, model: type[BaseModel]) -> Any:
    raw = req.context.body
    if not raw:
        raise ApiError(400, "request body must be a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_query(req: ApiRequest, model: type[BaseModel]) -> Any:
    values: dict[str, Any] = {}
    for name, value in req.params.items():
        if isinstance(value, list):
            raise ApiError(422, f"{name}: give this parameter once", [{"field": name, "message": "repeated"}])
        values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise validation_error(exc) from None


def validation_error(exc: ValidationError) -> ApiError:
    """422 naming the first problem, with every problem in `details`; malformed JSON is a 400."""
    problems = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(p["type"] == "json_invalid" for p in problems):
        return ApiError(400, "request body is not valid JSON")
    if any(p["type"] == "model_type" and not p["loc"] for p in problems):
        return ApiError(400, "request body must be a JSON object")
    details = [
        {"field": ".".join(str(part) for part in p["loc"]) or None, "message": p["msg"], "type": p["type"]}
        for p in problems
    ]
    first = details[0]
    message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    return ApiError(422, message, details)
