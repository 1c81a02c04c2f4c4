"""Password hashing with bcrypt, with equal work for unknown users and long passwords."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bcrypt

# Runs a CPU-heavy call somewhere that does not stall the caller's event loop (see ingress/app.py).
Offload = Callable[[Callable[[], Any]], Any]

# bcrypt only reads the first 72 bytes; longer passwords are refused, never truncated.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 10


def password_problem(password: str) -> str | None:
    """Say what is wrong with a new password, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        return f"must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8"
    return None


def in_place(call: Callable[[], Any]) -> Any:
    """Run the call right here (no event loop to keep serving)."""
    return call()


class PasswordHasher:
    """bcrypt at `rounds`; each hash or check goes through `offload` (by default, run in place).

    A hash takes about 250 ms at 12 rounds: under an event loop (gevent) it must run in a
    thread, or every other request of the process waits for it.
    """

    def __init__(self, rounds: int, offload: Offload = in_place) -> None:
        self.rounds = rounds
        self._offload = offload
        # Checked against when there is no real hash, so a miss costs what a hit costs.
        self._decoy = bcrypt.hashpw(b"decoy-password", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(self.rounds)
        hashed: bytes = self._offload(lambda: bcrypt.hashpw(password.encode(), salt))
        return hashed.decode()

    def verify(self, password: str, hashed: str | None) -> bool:
        """True when `password` matches `hashed`; always spends one bcrypt check."""
        candidate = password.encode()
        usable = hashed is not None and len(candidate) <= MAX_PASSWORD_BYTES
        target = hashed.encode() if usable and hashed is not None else self._decoy
        matched: bool = self._offload(lambda: bcrypt.checkpw(candidate[:MAX_PASSWORD_BYTES], target))
        return usable and matched
