"""OpenAPI 3.1 document built from the `@endpoint` declarations, and the /docs page."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import falcon
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ingress.endpoint import EndpointSpec, endpoint_spec
from ingress.schemas.common import ErrorEnvelope

METHODS = ("get", "post", "put", "patch", "delete")
REF_TEMPLATE = "#/components/schemas/{model}"
PARAM = re.compile(r"{(\w+)(?::(\w+))?}")
# Failures any endpoint can answer with, besides the ones it declares.
COMMON_ERRORS = (400, 413, 415, 422, 429, 500, 503)
REQUEST_ID_HEADER: dict[str, Any] = {
    "description": "Echoed or generated request id",
    "required": True,
    "schema": {"type": "string"},
}
RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "Seconds before retrying",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}


def build_document(routes: list[tuple[str, object]], version: str) -> dict[str, Any]:
    """Describe every route whose responders carry an EndpointSpec."""
    operations = [
        (template, method, spec)
        for template, resource in routes
        for method in METHODS
        if (spec := endpoint_spec(resource, method)) is not None
    ]
    keyed, definitions = _schemas(operations)
    paths: dict[str, Any] = {}
    for template, method, spec in operations:
        path = PARAM.sub(lambda m: "{" + m.group(1) + "}", template)
        paths.setdefault(path, {})[method] = _operation(template, method, spec, keyed)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DeepRef API",
            "version": version,
            "description": "AI-assisted employment references. Errors share one envelope; lists are cursor-paginated.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": definitions,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _schemas(operations: list[tuple[str, str, EndpointSpec]]) -> tuple[dict[Any, Any], dict[str, Any]]:
    wanted: set[tuple[type[BaseModel], str]] = {(ErrorEnvelope, "serialization")}
    for _, _, spec in operations:
        if spec.body is not None:
            wanted.add((spec.body, "validation"))
        if spec.response is not None:
            wanted.add((spec.response, "serialization"))
    ordered = sorted(wanted, key=lambda item: (item[0].__name__, item[1]))
    keyed, document = models_json_schema(ordered, ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
    return keyed, document.get("$defs", {})


def _operation(template: str, method: str, spec: EndpointSpec, keyed: dict[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": spec.summary,
        "tags": [spec.tag],
        "operationId": f"{method}{''.join(part.title() for part in re.findall(r'[a-z]+', template))}",
        "parameters": _path_parameters(template) + _query_parameters(spec),
        "responses": _responses(spec, keyed),
    }
    if spec.auth:
        operation["security"] = [{"bearerAuth": []}]
    if spec.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": keyed[(spec.body, "validation")]}},
        }
    if method == "post":
        operation["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Repeat-safe POST: the same key and body replay the first response (24 h).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    return operation


def _path_parameters(template: str) -> list[dict[str, Any]]:
    parameters = []
    for name, converter in PARAM.findall(template):
        schema = {"type": "string", "format": "uuid"} if converter == "uuid" else {"type": "string"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    return parameters


def _query_parameters(spec: EndpointSpec) -> list[dict[str, Any]]:
    if spec.query is None:
        return []
    schema = spec.query.model_json_schema(ref_template=REF_TEMPLATE, by_alias=True)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": _without_titles(prop)}
        for name, prop in schema["properties"].items()
    ]


def _without_titles(schema: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in schema.items() if key not in ("title", "description")}


def _responses(spec: EndpointSpec, keyed: dict[Any, Any]) -> dict[str, Any]:
    success: dict[str, Any] = {"description": HTTPStatus(spec.status).phrase}
    if spec.response is not None:
        success["content"] = {"application/json": {"schema": keyed[(spec.response, "serialization")]}}
    success["headers"] = {"X-Request-Id": REQUEST_ID_HEADER}
    error_schema = {"application/json": {"schema": keyed[(ErrorEnvelope, "serialization")]}}
    codes = set(COMMON_ERRORS) | set(spec.errors) | ({401, 404} if spec.auth else set())
    if spec.body is None:
        codes -= {413, 415}
    responses: dict[str, Any] = {str(spec.status): success}
    for code in sorted(codes):
        headers: dict[str, Any] = {"X-Request-Id": REQUEST_ID_HEADER}
        if code in (429, 503):
            headers["Retry-After"] = RETRY_AFTER_HEADER
        responses[str(code)] = {"description": HTTPStatus(code).phrase, "headers": headers, "content": error_schema}
    return responses


class OpenApiDocument:
    rate_limited = False

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


# Swagger UI 5 (the first release that reads OpenAPI 3.1), pinned with subresource integrity.
SWAGGER_UI = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0"
DOCS_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DeepRef API</title>
<link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css" crossorigin="anonymous"
 integrity="sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I"></head>
<body><div id="swagger-ui"></div>
<script src="{SWAGGER_UI}/swagger-ui-bundle.js" crossorigin="anonymous"
 integrity="sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9"></script>
<script src="/docs/init.js"></script></body></html>
"""
DOCS_INIT = 'SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui"});\n'


class DocsPage:
    """Swagger UI for the served OpenAPI document."""

    rate_limited = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = DOCS_PAGE


class DocsInit:
    rate_limited = False

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JS
        resp.text = DOCS_INIT
