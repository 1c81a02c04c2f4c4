"""Request and response schemas; the same models validate requests and generate OpenAPI."""
