"""Behaviour every route shares: ids, headers, the envelope, metrics, docs."""

import falcon.testing
import pytest

from domain.core.logging import JsonFormatter
from ingress.app import create_app


def _assert_envelope(result, status, path):
    body = result.json
    assert set(body) == {"statusCode", "message", "error", "timestamp", "path", "requestId", "details"}
    assert body["statusCode"] == status and body["path"] == path
    assert body["requestId"] == result.headers["X-Request-Id"]
    assert body["timestamp"].endswith("Z")


def test_request_id_is_echoed_or_generated(client):
    given = client.simulate_get("/healthz", headers={"X-Request-Id": "trace-abc.123"})
    assert given.headers["X-Request-Id"] == "trace-abc.123"
    generated = client.simulate_get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    assert len(generated.headers["X-Request-Id"]) == 32


def test_security_headers_on_every_response(client):
    for result in (client.simulate_get("/healthz"), client.simulate_get("/api/v1/nowhere")):
        assert result.headers["X-Content-Type-Options"] == "nosniff"
        assert result.headers["X-Frame-Options"] == "DENY"
        assert result.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in result.headers["Content-Security-Policy"]
    assert client.simulate_get("/api/v1/nowhere").headers["Cache-Control"] == "no-store"


def test_unknown_route_and_wrong_method_use_the_envelope(client):
    missing = client.simulate_get("/api/v1/nowhere")
    assert missing.status_code == 404
    _assert_envelope(missing, 404, "/api/v1/nowhere")
    wrong = client.simulate_delete("/api/v1/auth/login")
    assert wrong.status_code == 405
    _assert_envelope(wrong, 405, "/api/v1/auth/login")
    assert "POST" in wrong.headers["Allow"]


def test_unexpected_error_is_a_500_without_internals(settings, database, redis_client):
    app = create_app(settings, database=database, redis_client=redis_client)

    class Broken:
        def on_get(self, req, resp):
            raise RuntimeError("secret internals: password=hunter2")

    app.add_route("/api/v1/broken", Broken())
    result = falcon.testing.TestClient(app).simulate_get("/api/v1/broken")
    assert result.status_code == 500
    _assert_envelope(result, 500, "/api/v1/broken")
    assert "hunter2" not in result.text and "Traceback" not in result.text


def test_cors_allows_listed_origins_only(settings, database, redis_client):
    allowed = settings.model_copy(update={"allowed_origins": ("https://app.example.com",)})
    client = falcon.testing.TestClient(create_app(allowed, database=database, redis_client=redis_client))
    preflight = client.simulate_options(
        "/api/v1/auth/login",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, Idempotency-Key",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    plain = client.simulate_get("/healthz", headers={"Origin": "https://app.example.com"})
    assert plain.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "X-Request-Id" in plain.headers["Access-Control-Expose-Headers"]
    other = client.simulate_get("/healthz", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_metrics_count_requests_by_route(client):
    client.simulate_get("/healthz")
    client.simulate_get("/api/v1/nowhere")
    text = client.simulate_get("/metrics").text
    assert 'deepref_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "deepref_http_request_duration_seconds_bucket" in text


def test_health_and_readiness(client):
    assert client.simulate_get("/healthz").json == {"status": "ok", "checks": {}}
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"postgres": "ok", "redis": "ok"}


def test_openapi_document_describes_validated_schemas(client):
    document = client.simulate_get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    register = document["paths"]["/api/v1/auth/register"]["post"]
    schema_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"email", "password", "role", "name"}
    assert schema["properties"]["role"]["enum"] == ["job_seeker", "employer", "referrer"]
    assert {"201", "409", "422", "429"} <= set(register["responses"])
    patch_user = document["paths"]["/api/v1/users/{user_id}"]["patch"]
    assert patch_user["security"] == [{"bearerAuth": []}]
    assert patch_user["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    listing = document["paths"]["/api/v1/users"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"limit", "cursor", "role", "status"}


@pytest.mark.parametrize("path", ["/docs", "/docs/init.js"])
def test_docs_page_is_served(client, path):
    result = client.simulate_get(path)
    assert result.status_code == 200
    assert "swagger" in result.text.lower() or "SwaggerUIBundle" in result.text
    assert "cdn.jsdelivr.net" in result.headers["Content-Security-Policy"]


def test_access_log_is_json_with_request_id_and_no_raw_path(client, caplog):
    caplog.set_level("INFO", logger="deepref.access")
    client.simulate_get("/api/v1/users/me", headers={"X-Request-Id": "log-check-1"})
    record = next(r for r in caplog.records if getattr(r, "request_id", None) == "log-check-1")
    assert (record.method, record.route, record.status) == ("GET", "/api/v1/users/me", 401)
    assert record.duration_ms >= 0 and record.client_ip == "127.0.0.1"
    line = JsonFormatter().format(record)
    assert '"request_id": "log-check-1"' in line and '"level": "info"' in line


def test_production_adds_hsts(settings, database, redis_client):
    production = settings.model_copy(update={"env": "production"})
    client = falcon.testing.TestClient(create_app(production, database=database, redis_client=redis_client))
    assert client.simulate_get("/healthz").headers["Strict-Transport-Security"].startswith("max-age=")


def test_metrics_show_the_celery_queue_lengths(client, redis_client, settings):
    # Messages as kombu's Redis transport keeps them: one list per queue and priority step.
    redis_client.lpush("email", "m1", "m2")
    redis_client.lpush("email\x06\x163", "m3")
    redis_client.lpush("ai", "m4")
    text = client.simulate_get("/metrics").text
    assert 'deepref_queue_length{queue="email"} 3.0' in text
    assert 'deepref_queue_length{queue="ai"} 1.0' in text
    assert 'deepref_queue_length{queue="sync"} 0.0' in text


def test_metrics_without_the_broker_still_answer(settings, database, redis_client):
    elsewhere = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    client = falcon.testing.TestClient(create_app(elsewhere, database=database, redis_client=redis_client))
    answer = client.simulate_get("/metrics")
    assert answer.status_code == 200
    assert "deepref_queue_length" not in answer.text
    assert "deepref_http_requests_total" in answer.text
