"""The `audit` queue: appending the recorded facts to the audit trail's hash chain."""

from __future__ import annotations

from domain.audit import service as audit
from domain.operations import routes
from domain.operations.dispatch import clear_wakeup
from tasks.app import app
from tasks.runtime import runtime


@app.task(name="tasks.audit.drain")
def drain() -> int:
    """Append every pending fact to the chain; return how many (sent as a wake-up, and by beat)."""
    rt = runtime()
    # First, before reading: a fact committed from now on sends a new wake-up.
    clear_wakeup(rt.redis, routes.DRAIN_AUDIT)
    return audit.drain(rt.database)
