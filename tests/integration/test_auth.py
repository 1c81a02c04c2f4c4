"""Registration, login, tokens and MFA through the HTTP API."""

import time

import jwt
import pyotp
import pytest

from tests.conftest import PASSWORD, register

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"


def _register_body(**overrides):
    body = {"email": "ann@example.com", "password": PASSWORD, "role": "job_seeker", "name": "Ann"}
    body.update(overrides)
    return body


def test_register_returns_user_and_tokens(client):
    result = client.simulate_post(REGISTER, json=_register_body(email="Ann@Example.com"))
    assert result.status_code == 201
    body = result.json
    assert body["tokenType"] == "Bearer" and body["expiresIn"] == 900
    assert body["user"]["email"] == "Ann@example.com"  # domains are case-insensitive
    assert body["user"]["role"] == "job_seeker" and body["user"]["status"] == "active"
    assert body["user"]["emailVerified"] is False and body["user"]["mfaEnabled"] is False
    me = client.simulate_get(ME, headers={"Authorization": f"Bearer {body['accessToken']}"})
    assert me.json["id"] == body["user"]["id"]


def test_email_is_unique_case_insensitively(client):
    register(client, email="ann@example.com")
    result = client.simulate_post(REGISTER, json=_register_body(email="ANN@example.com"))
    assert result.status_code == 409
    assert result.json["message"].startswith("email:")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (_register_body(role="admin"), 422, "role:"),
        (_register_body(password="é" * 40), 422, "password: must be at most 72 bytes"),
        (_register_body(password="short"), 422, "password: must be at least"),
        (_register_body(email="not-an-email"), 422, "email:"),
        ({**_register_body(), "isAdmin": True}, 422, "isAdmin: Extra inputs are not permitted"),
        ({"email": "ann@example.com"}, 422, "password: Field required"),
        (_register_body(name=""), 422, "name:"),
    ],
)
def test_register_rejects_bad_input_with_details(client, body, status, message):
    result = client.simulate_post(REGISTER, json=body)
    assert result.status_code == status
    assert result.json["message"].startswith(message)
    assert result.json["details"], "details say which field failed"
    assert result.json["statusCode"] == status and result.json["path"] == REGISTER


def test_malformed_json_wrong_type_and_empty_body(client):
    bad_json = client.simulate_post(REGISTER, body=b'{"email": ', headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json["message"] == "request body is not valid JSON"
    not_object = client.simulate_post(REGISTER, body=b"[1, 2]", headers={"Content-Type": "application/json"})
    assert not_object.status_code == 400 and "JSON object" in not_object.json["message"]
    empty = client.simulate_post(REGISTER, headers={"Content-Type": "application/json"})
    assert empty.status_code == 400
    form = client.simulate_post(
        REGISTER, body=b"email=a", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415 and form.json["error"] == "Unsupported Media Type"
    no_type = client.simulate_post(REGISTER, body=b"{}")
    assert no_type.status_code == 415


def test_oversized_body_is_413(client):
    huge = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    result = client.simulate_post(REGISTER, body=huge, headers={"Content-Type": "application/json"})
    assert result.status_code == 413
    assert result.json["statusCode"] == 413


def test_login_succeeds_and_failures_look_the_same(client):
    account = register(client, email="ann@example.com")
    ok = client.simulate_post(LOGIN, json={"email": "ANN@example.com", "password": PASSWORD})
    assert ok.status_code == 200 and ok.json["user"]["id"] == account.id
    wrong = client.simulate_post(LOGIN, json={"email": "ann@example.com", "password": "wrong password!"})
    unknown = client.simulate_post(LOGIN, json={"email": "nobody@example.com", "password": PASSWORD})
    too_long = client.simulate_post(LOGIN, json={"email": "ann@example.com", "password": "x" * 100})
    for failure in (wrong, unknown, too_long):
        assert failure.status_code == 401
        assert failure.json["message"] == "email or password is incorrect"
        assert failure.headers["WWW-Authenticate"].startswith("Bearer")


def test_refresh_rotates_and_reuse_revokes_the_family(client):
    account = register(client)
    first = client.simulate_post(REFRESH, json={"refreshToken": account.refresh_token})
    assert first.status_code == 200
    rotated = first.json["refreshToken"]
    assert rotated != account.refresh_token
    # The spent token comes back (stolen copy): refused, and the whole family dies.
    reuse = client.simulate_post(REFRESH, json={"refreshToken": account.refresh_token})
    assert reuse.status_code == 401
    assert client.simulate_post(REFRESH, json={"refreshToken": rotated}).status_code == 401
    # Other sessions of the same user are not affected.
    other = client.simulate_post(LOGIN, json={"email": account.email, "password": PASSWORD})
    assert client.simulate_post(REFRESH, json={"refreshToken": other.json["refreshToken"]}).status_code == 200


def test_unknown_refresh_token_is_401(client):
    assert client.simulate_post(REFRESH, json={"refreshToken": "made-up"}).status_code == 401


def test_logout_ends_that_session(client):
    account = register(client)
    result = client.simulate_post(
        "/api/v1/auth/logout", json={"refreshToken": account.refresh_token}, headers=account.auth
    )
    assert result.status_code == 204
    assert client.simulate_post(REFRESH, json={"refreshToken": account.refresh_token}).status_code == 401
    # Another user's token cannot be revoked by someone else.
    other = register(client)
    client.simulate_post("/api/v1/auth/logout", json={"refreshToken": other.refresh_token}, headers=account.auth)
    assert client.simulate_post(REFRESH, json={"refreshToken": other.refresh_token}).status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        "Bearer " + jwt.encode({"sub": "x", "iss": "deepref", "aud": "deepref-api"}, None, algorithm="none"),
    ],
)
def test_bad_access_tokens_are_401(client, header):
    result = client.simulate_get(ME, headers={"Authorization": header})
    assert result.status_code == 401
    assert result.json["error"] == "Unauthorized"


def test_missing_token_is_401(client):
    result = client.simulate_get(ME)
    assert result.status_code == 401 and result.json["message"] == "authentication required"


def test_mfa_setup_enable_login_disable(client):
    account = register(client)
    setup = client.simulate_post("/api/v1/auth/mfa/setup", headers=account.auth)
    assert setup.status_code == 200 and setup.json["otpauthUri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(setup.json["secret"])
    if time.time() % 30 > 25:  # keep the three steps used below inside the accepted window
        time.sleep(30 - time.time() % 30)
    now = time.time()
    wrong = client.simulate_post("/api/v1/auth/mfa/enable", json={"code": "000000"}, headers=account.auth)
    assert wrong.status_code == 422
    enabled = client.simulate_post("/api/v1/auth/mfa/enable", json={"code": totp.at(now - 30)}, headers=account.auth)
    assert enabled.status_code == 200 and enabled.json["mfaEnabled"] is True
    assert client.simulate_post("/api/v1/auth/mfa/setup", headers=account.auth).status_code == 409

    no_code = client.simulate_post(LOGIN, json={"email": account.email, "password": PASSWORD})
    assert no_code.status_code == 401 and no_code.json["message"].startswith("mfaCode")
    bad_code = client.simulate_post(LOGIN, json={"email": account.email, "password": PASSWORD, "mfaCode": "123456"})
    assert bad_code.status_code == 401
    login_code = totp.at(now)
    with_code = client.simulate_post(LOGIN, json={"email": account.email, "password": PASSWORD, "mfaCode": login_code})
    assert with_code.status_code == 200

    disabled = client.simulate_post("/api/v1/auth/mfa/disable", json={"code": "000000"}, headers=account.auth)
    assert disabled.status_code == 422
    disabled = client.simulate_post(
        "/api/v1/auth/mfa/disable",
        json={"code": totp.at(now + 30)},
        headers=account.auth,
    )
    assert disabled.status_code == 200 and disabled.json["mfaEnabled"] is False
    again = client.simulate_post("/api/v1/auth/mfa/disable", json={"code": totp.at(now)}, headers=account.auth)
    assert again.status_code == 409
    assert client.simulate_post(LOGIN, json={"email": account.email, "password": PASSWORD}).status_code == 200


def test_mfa_enable_requires_setup_first(client):
    account = register(client)
    result = client.simulate_post("/api/v1/auth/mfa/enable", json={"code": "123456"}, headers=account.auth)
    assert result.status_code == 409
