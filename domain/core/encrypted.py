"""Encrypted model attributes.

A sensitive column is declared as a `Ciphertext` column (bytes in PostgreSQL) plus an
`Encrypted` attribute that seals and opens it. The attribute, not the column type, does
the cryptography because AES-GCM's associated data must name the row and the column,
and a column type never sees the row. The owning model supplies its data key.
"""

from __future__ import annotations

import json
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

from domain.core.crypto import FORMAT_VERSION, KeyRing, open_sealed, seal

T = TypeVar("T")

_installed: list[KeyRing] = []


def install_keyring(keyring: KeyRing) -> None:
    """Make `keyring` the process's key material (called once by each process at start-up)."""
    _installed[:] = [keyring]


def current_keyring() -> KeyRing:
    if not _installed:
        raise RuntimeError("no keyring installed: call install_keyring() at start-up")
    return _installed[0]


class Ciphertext(TypeDecorator[bytes]):
    """Bytes column that only ever stores sealed values; refuses plaintext by mistake."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: bytes | None, dialect: Any) -> bytes | None:
        if value is not None and (not isinstance(value, bytes) or value[:1] != FORMAT_VERSION):
            raise ValueError("refusing to store an unsealed value in an encrypted column")
        return value


class KeyOwner(Protocol):
    """A row whose sensitive attributes are sealed with a data key it can provide."""

    id: Any

    def data_key(self) -> bytes: ...


class Codec(Protocol[T]):
    def encode(self, value: T) -> bytes: ...

    def decode(self, raw: bytes) -> T: ...


class TextCodec:
    def encode(self, value: str) -> bytes:
        return value.encode()

    def decode(self, raw: bytes) -> str:
        return raw.decode()


class JsonCodec:
    def encode(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    def decode(self, raw: bytes) -> Any:
        return json.loads(raw)


class Encrypted(Generic[T]):
    """Descriptor: reading opens `<column>` with the row's data key, writing seals it."""

    def __init__(self, column_attribute: str, codec: Codec[T]) -> None:
        self.column_attribute = column_attribute
        self.codec = codec
        self.label = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.label = f"{getattr(owner, '__tablename__', owner.__name__)}.{name}"

    def associated_data(self, row: KeyOwner) -> bytes:
        if row.id is None:
            raise ValueError(f"{self.label}: assign the row id before setting encrypted values")
        return f"{self.label}:{row.id}".encode()

    def __get__(self, row: KeyOwner | None, owner: type) -> Any:
        if row is None:
            return self
        blob = getattr(row, self.column_attribute)
        if blob is None:
            return None
        return self.codec.decode(open_sealed(row.data_key(), blob, self.associated_data(row)))

    def __set__(self, row: KeyOwner, value: T | None) -> None:
        if value is None:
            setattr(row, self.column_attribute, None)
            return
        blob = seal(row.data_key(), self.codec.encode(value), self.associated_data(row))
        setattr(row, self.column_attribute, blob)


def encrypted_text(column_attribute: str) -> Encrypted[str]:
    return Encrypted(column_attribute, TextCodec())


def encrypted_json(column_attribute: str) -> Encrypted[Any]:
    return Encrypted(column_attribute, JsonCodec())
