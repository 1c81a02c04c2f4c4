"""The caller's own account and user administration."""

import uuid

import pytest

from tests.conftest import register

ME = "/api/v1/users/me"
USERS = "/api/v1/users"


def test_update_own_profile(client, account):
    result = client.simulate_patch(
        ME,
        json={"name": "Ann Smith", "phone": "+14155550100", "metadata": {"headline": "Engineer"}},
        headers=account.auth,
    )
    assert result.status_code == 200
    assert result.json["name"] == "Ann Smith"
    assert result.json["phone"] == "+14155550100"
    assert result.json["metadata"] == {"headline": "Engineer"}
    again = client.simulate_get(ME, headers=account.auth)
    assert again.json["name"] == "Ann Smith" and again.json["metadata"] == {"headline": "Engineer"}
    cleared = client.simulate_patch(ME, json={"phone": None}, headers=account.auth)
    assert cleared.json["phone"] is None and cleared.json["name"] == "Ann Smith"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "admin"}, "role"),
        ({"status": "active"}, "status"),
        ({"email": "other@example.com"}, "email"),
        ({"name": None}, "name"),
        ({"phone": "12345"}, "phone"),
    ],
)
def test_cannot_change_role_status_or_send_junk(client, account, body, field):
    result = client.simulate_patch(ME, json=body, headers=account.auth)
    assert result.status_code == 422
    assert result.json["details"][0]["field"] == field
    assert client.simulate_get(ME, headers=account.auth).json["role"] == "job_seeker"


def test_admin_routes_are_hidden_from_other_roles(client, account):
    other = register(client)
    assert client.simulate_get(USERS, headers=account.auth).status_code == 404
    result = client.simulate_patch(f"{USERS}/{other.id}", json={"status": "suspended"}, headers=account.auth)
    assert result.status_code == 404
    assert client.simulate_get(USERS).status_code == 401


def test_admin_lists_users_with_filters_and_cursor(client, admin):
    employers = [register(client, role="employer") for _ in range(3)]
    register(client, role="referrer")
    first = client.simulate_get(USERS, params={"role": "employer", "limit": "2"}, headers=admin.auth)
    assert first.status_code == 200
    assert len(first.json["items"]) == 2 and first.json["nextCursor"]
    second = client.simulate_get(
        USERS, params={"role": "employer", "limit": "2", "cursor": first.json["nextCursor"]}, headers=admin.auth
    )
    assert len(second.json["items"]) == 1 and second.json["nextCursor"] is None
    seen = [u["id"] for u in first.json["items"] + second.json["items"]]
    assert sorted(seen) == sorted(e.id for e in employers)  # every employer once, newest first
    assert {u["role"] for u in first.json["items"]} == {"employer"}
    suspended = client.simulate_get(USERS, params={"status": "suspended"}, headers=admin.auth)
    assert suspended.json == {"items": [], "nextCursor": None}


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"role": "wizard"}, {"cursor": "garbage"}, {"sort": "name"}],
)
def test_admin_list_rejects_bad_queries(client, admin, params):
    result = client.simulate_get(USERS, params=params, headers=admin.auth)
    assert result.status_code == 422


def test_repeated_query_parameter_is_422(client, admin):
    result = client.simulate_get(USERS, query_string="role=employer&role=referrer", headers=admin.auth)
    assert result.status_code == 422


def test_suspending_a_user_stops_their_tokens_at_once(client, admin):
    victim = register(client)
    assert client.simulate_get(ME, headers=victim.auth).status_code == 200
    result = client.simulate_patch(f"{USERS}/{victim.id}", json={"status": "suspended"}, headers=admin.auth)
    assert result.status_code == 200 and result.json["status"] == "suspended"
    assert client.simulate_get(ME, headers=victim.auth).status_code == 401
    refresh = client.simulate_post("/api/v1/auth/refresh", json={"refreshToken": victim.refresh_token})
    assert refresh.status_code == 401
    login = client.simulate_post("/api/v1/auth/login", json={"email": victim.email, "password": "whatever1234"})
    assert login.status_code == 401
    restored = client.simulate_patch(f"{USERS}/{victim.id}", json={"status": "active"}, headers=admin.auth)
    assert restored.json["status"] == "active"
    assert client.simulate_get(ME, headers=victim.auth).status_code == 200


def test_admin_changes_role_and_name(client, admin):
    user = register(client)
    result = client.simulate_patch(f"{USERS}/{user.id}", json={"role": "employer", "name": "Bo"}, headers=admin.auth)
    assert result.json["role"] == "employer" and result.json["name"] == "Bo"


def test_admin_cannot_demote_or_suspend_themselves(client, admin):
    result = client.simulate_patch(f"{USERS}/{admin.id}", json={"status": "suspended"}, headers=admin.auth)
    assert result.status_code == 409


def test_unknown_or_malformed_user_id_is_404(client, admin):
    assert client.simulate_patch(f"{USERS}/{uuid.uuid4()}", json={"name": "X"}, headers=admin.auth).status_code == 404
    assert client.simulate_patch(f"{USERS}/not-a-uuid", json={"name": "X"}, headers=admin.auth).status_code == 404


def test_admins_are_not_made_through_the_api(client, admin):
    user = register(client)
    result = client.simulate_patch(f"{USERS}/{user.id}", json={"role": "admin"}, headers=admin.auth)
    assert result.status_code == 422
    assert client.simulate_get(ME, headers=user.auth).json["role"] == "job_seeker"
