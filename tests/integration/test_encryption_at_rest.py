"""What PostgreSQL actually stores for a user."""

from sqlalchemy import text

from domain.core.encrypted import current_keyring
from domain.users.models import User
from tests.conftest import register


def test_raw_rows_hold_no_plaintext(client, connection):
    account = register(client, email="secret.person@example.com")
    client.simulate_patch(
        "/api/v1/users/me", json={"phone": "+14155550199", "metadata": {"city": "Lisbon"}}, headers=account.auth
    )
    row = connection.execute(text("SELECT * FROM users WHERE id = :id"), {"id": account.id}).mappings().one()
    dump = b"".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode() for v in row.values())
    for plaintext in (b"secret.person", b"example.com", b"Test User", b"14155550199", b"Lisbon"):
        assert plaintext not in dump
    assert row["email_index"] == current_keyring().email_index("secret.person@example.com")


def test_copying_ciphertext_between_users_does_not_decrypt(client, connection, database):
    ann, bob = register(client), register(client)
    connection.execute(
        text("UPDATE users SET email = (SELECT email FROM users WHERE id = :ann) WHERE id = :bob"),
        {"ann": ann.id, "bob": bob.id},
    )
    result = client.simulate_get("/api/v1/users/me", headers=bob.auth)
    assert result.status_code == 500
    assert "Traceback" not in result.text and "InvalidTag" not in result.text
    with database.transaction() as session:
        assert session.get(User, ann.id).email == ann.email
