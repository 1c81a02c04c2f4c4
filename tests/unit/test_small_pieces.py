import uuid
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from domain.core.embedded import free_ports
from domain.core.errors import InvalidInput
from domain.core.pagination import decode_cursor, encode_cursor
from domain.users import mfa
from domain.users.models import User
from ingress.context import client_ip
from ingress.endpoint import validation_error
from ingress.schemas.users import ProfileUpdate


def test_cursor_round_trip_and_rejects_garbage():
    when, item = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), uuid.uuid4()
    cursor = decode_cursor(encode_cursor(when, item))
    assert (cursor.created_at, cursor.id) == (when, item)
    for bad in ("", "%%%", "bm90LWpzb24", encode_cursor(when, item)[:-3], "WyIyMDI2LTAxLTAyIiwgIngiXQ"):
        with pytest.raises(InvalidInput, match="cursor"):
            decode_cursor(bad)
    naive = encode_cursor(datetime(2026, 1, 2), item)
    with pytest.raises(InvalidInput, match="cursor"):
        decode_cursor(naive)


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),  # untrusted peer: header ignored
        ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("127.0.0.1", "198.51.100.1, 10.0.0.2, 127.0.0.1", "10.0.0.2"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "garbage", "127.0.0.1"),
        ("127.0.0.1", " , ", "127.0.0.1"),
    ],
)
def test_client_ip_is_first_untrusted_hop(remote, forwarded, expected):
    assert client_ip(remote, forwarded, ("127.0.0.1",)) == expected


def test_totp_code_is_accepted_once(keyring):
    user = User(email_index=b"a", email="ann@example.com", role="job_seeker")
    secret = mfa.new_secret()
    user.mfa_secret = secret
    import pyotp

    now = 1_800_000_000.0
    code = pyotp.TOTP(secret).at(now)
    assert mfa.accept_code(user, code, now=now)
    assert not mfa.accept_code(user, code, now=now)  # replayed
    assert not mfa.accept_code(user, "abcdef", now=now)
    assert mfa.provisioning_uri(secret, "ann@example.com").startswith("otpauth://totp/DeepRef:ann%40example.com")


class Sample(BaseModel):
    count: int


def test_validation_errors_name_the_field():
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate_json(b'{"count": "many"}')
    error = validation_error(caught.value)
    assert error.status_code == 422
    assert error.description.startswith("count: ")
    assert error.details[0]["field"] == "count"
    with pytest.raises(ValidationError) as caught:
        Sample.model_validate_json(b"{nope")
    assert validation_error(caught.value).status_code == 400


def test_profile_update_rules():
    with pytest.raises(ValidationError, match="cannot be null"):
        ProfileUpdate.model_validate({"name": None})
    with pytest.raises(ValidationError, match="4096"):
        ProfileUpdate.model_validate({"metadata": {"bio": "x" * 5000}})
    with pytest.raises(ValidationError):
        ProfileUpdate.model_validate({"role": "admin"})
    assert ProfileUpdate.model_validate({"phone": None}).phone is None


def test_ports_chosen_together_are_all_different():
    ports = free_ports(50)
    assert len(set(ports)) == 50 and all(port > 0 for port in ports)
