import pytest

from domain.core.crypto import KeyRing
from domain.core.encrypted import install_keyring


@pytest.fixture
def keyring() -> KeyRing:
    """A process keyring without any I/O (unit tests never touch a database)."""
    ring = KeyRing(b"u" * 32)
    install_keyring(ring)
    return ring
