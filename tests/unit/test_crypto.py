import uuid

import pytest

from domain.core.crypto import DecryptionError, KeyRing, LocalKeyWrapper, hash_token, open_sealed, seal
from domain.core.encrypted import Ciphertext, encrypted_text
from domain.users.models import DataKeyShredded, User


def test_sealed_value_opens_only_with_same_key_and_context():
    key = KeyRing.new_data_key()
    blob = seal(key, b"ann@example.com", b"users.email:1")
    assert b"ann@example.com" not in blob
    assert open_sealed(key, blob, b"users.email:1") == b"ann@example.com"
    with pytest.raises(DecryptionError):
        open_sealed(key, blob, b"users.email:2")
    with pytest.raises(DecryptionError):
        open_sealed(KeyRing.new_data_key(), blob, b"users.email:1")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        open_sealed(key, tampered, b"users.email:1")
    with pytest.raises(DecryptionError, match="not a sealed value"):
        open_sealed(key, b"plain", b"users.email:1")


def test_each_seal_uses_a_fresh_nonce():
    key = KeyRing.new_data_key()
    assert seal(key, b"same", b"ad") != seal(key, b"same", b"ad")


def test_data_keys_are_wrapped_per_user():
    wrapper = LocalKeyWrapper(b"m" * 32)
    data_key = KeyRing.new_data_key()
    wrapped = wrapper.wrap(data_key, b"user-1")
    assert wrapper.unwrap(wrapped, b"user-1") == data_key
    with pytest.raises(DecryptionError):
        wrapper.unwrap(wrapped, b"user-2")
    with pytest.raises(DecryptionError):
        LocalKeyWrapper(b"n" * 32).unwrap(wrapped, b"user-1")


def test_blind_index_is_keyed_and_normalised():
    ring = KeyRing(b"m" * 32)
    assert ring.email_index("Ann@Example.com ") == ring.email_index("ann@example.com")
    assert ring.email_index("ann@example.com") != ring.email_index("bob@example.com")
    assert KeyRing(b"n" * 32).email_index("ann@example.com") != ring.email_index("ann@example.com")


def test_token_hash_is_stable_and_not_the_token():
    assert hash_token("abc") == hash_token("abc") != b"abc"


def test_encrypted_attributes_bind_row_and_column(keyring):
    ann = User(email_index=b"a", email="ann@example.com", name="Ann", role="job_seeker")
    bob = User(email_index=b"b", email="bob@example.com", name="Bob", role="job_seeker")
    assert ann.email == "ann@example.com" and ann.name == "Ann"
    assert b"ann" not in ann.email_ciphertext
    ann.name_ciphertext = ann.email_ciphertext  # moved to another column
    with pytest.raises(DecryptionError):
        _ = ann.name
    bob.email_ciphertext = ann.email_ciphertext  # moved to another row
    with pytest.raises(DecryptionError):
        _ = bob.email
    ann.phone = None
    assert ann.phone is None


def test_erasing_the_data_key_shreds_the_data(keyring):
    user = User(email_index=b"a", email="ann@example.com", role="job_seeker")
    user.wrapped_data_key = None
    user.__dict__.pop("_data_key", None)
    with pytest.raises(DataKeyShredded):
        _ = user.email


def test_encrypted_attribute_needs_an_id(keyring):
    user = User(email_index=b"a", role="job_seeker")
    descriptor = User.__dict__["email"]
    user.id = None
    with pytest.raises(ValueError, match="assign the row id"):
        descriptor.associated_data(user)
    assert encrypted_text("x").label == ""
    user.id = uuid.uuid4()


def test_ciphertext_column_refuses_plaintext():
    column = Ciphertext()
    with pytest.raises(ValueError, match="unsealed"):
        column.process_bind_param(b"ann@example.com", None)
    assert column.process_bind_param(None, None) is None
    assert column.process_bind_param(b"\x01" + b"x" * 40, None) is not None
