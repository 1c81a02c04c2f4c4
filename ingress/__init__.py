"""The Falcon ingress: routing, middleware, request/response schemas, OpenAPI."""
