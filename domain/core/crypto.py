"""Envelope encryption, blind indexes and token hashing.

Each user has a random 256-bit data key; it is stored wrapped (AES-256-GCM) by the
master key, which lives outside the database (env or key file; a KMS can implement the
same `KeyWrapper` protocol). Sensitive values are sealed with the owner's data key and
the row id plus column name as associated data, so a ciphertext copied to another row or
column fails to open. Destroying the wrapped data key makes every value unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = b"\x01"
NONCE_BYTES = 12
DATA_KEY_BYTES = 32


class DecryptionError(Exception):
    """A ciphertext did not open: wrong key, wrong row/column, tampered or shredded."""


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt with AES-256-GCM: version byte, random nonce, ciphertext and tag."""
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT_VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    """Decrypt what `seal` produced; raises DecryptionError on any mismatch."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT_VERSION:
        raise DecryptionError("not a sealed value")
    nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, associated_data)
    except InvalidTag as exc:
        raise DecryptionError("ciphertext does not authenticate") from exc


def derive_key(master_key: bytes, purpose: str) -> bytes:
    """Derive an independent 256-bit key for one purpose from the master key (HKDF)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(master_key)


class KeyWrapper(Protocol):
    """Wraps and unwraps data keys; a KMS client can stand in for the local master key."""

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalKeyWrapper:
    """Wraps data keys with a master key held in process memory."""

    def __init__(self, master_key: bytes) -> None:
        self._kek = derive_key(master_key, "deepref:key-wrapping")

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        return seal(self._kek, data_key, b"data-key:" + context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return open_sealed(self._kek, wrapped, b"data-key:" + context)


class KeyRing:
    """The process's view of key material: data-key wrapping and derived service keys."""

    def __init__(self, master_key: bytes, wrapper: KeyWrapper | None = None) -> None:
        self.wrapper: KeyWrapper = wrapper or LocalKeyWrapper(master_key)
        self._email_index_key = derive_key(master_key, "deepref:blind-index:email")
        self.service_key = derive_key(master_key, "deepref:service-data")

    @staticmethod
    def new_data_key() -> bytes:
        return secrets.token_bytes(DATA_KEY_BYTES)

    def email_index(self, email: str) -> bytes:
        """Keyed HMAC of the normalised email: equal for equal emails, useless without the key."""
        return hmac.new(self._email_index_key, normalise_email(email).encode(), hashlib.sha256).digest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def hash_token(token: str) -> bytes:
    """Hash a high-entropy random token for storage (no salt needed: tokens are unguessable)."""
    return hashlib.sha256(token.encode()).digest()


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
