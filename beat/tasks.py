"""The periodic tasks beat schedules (`celeryconfig.beat_schedule`); they run on `sync` workers.

Beat also schedules one queue task as a safety net: `tasks.audit.drain`, on `audit`.
"""

from __future__ import annotations

from domain.audit import service as audit
from domain.idempotency import service as idempotency
from domain.jobs import service as jobs
from domain.operations import maintenance
from domain.references import maintenance as references
from tasks.app import app
from tasks.runtime import runtime, send_task


@app.task(name="beat.tasks.relay_outbox")
def relay_outbox() -> int:
    """Publish the outbox rows no worker has claimed (broker was down, process died)."""
    rt = runtime()
    return maintenance.relay_outbox(rt.database, send_task, grace_seconds=rt.settings.outbox_grace_seconds)


@app.task(name="beat.tasks.reap_stuck_operations")
def reap_stuck_operations() -> dict[str, int]:
    """Redeliver (or bury) operations whose task message was lost."""
    rt = runtime()
    # Past the visibility timeout the broker would have redelivered a killed worker's task.
    lost_after = rt.settings.celery_visibility_timeout + rt.settings.task_time_limit
    with rt.database.transaction() as session:
        reaped = maintenance.reap_stuck(
            session, max_attempts=rt.settings.task_max_attempts, lost_after_seconds=lost_after
        )
    return {"redelivered": reaped.redelivered, "dead": reaped.dead}


@app.task(name="beat.tasks.prune_expired_records")
def prune_expired_records() -> dict[str, int]:
    """Delete expired idempotency keys and old published outbox rows."""
    rt = runtime()
    keys = idempotency.prune_expired(rt.database)
    with rt.database.transaction() as session:
        outbox = maintenance.prune_outbox(session)
    return {"idempotencyKeys": keys, "outboxRows": outbox}


@app.task(name="beat.tasks.restore_unacked_messages")
def restore_unacked_messages() -> bool:
    """Hand the broker back the messages of workers that died (Redis broker); True if it swept.

    kombu's Redis transport sweeps for them only from workers with an event loop (prefork);
    gevent workers never do, so a farm of gevent workers would strand a killed worker's task.
    AMQP brokers redeliver by themselves.
    """
    with app.connection_for_write() as connection:
        restore = getattr(getattr(connection.default_channel, "qos", None), "restore_visible", None)
        if restore is None:
            return False
        restore(num=100, interval=1)
    return True


@app.task(name="beat.tasks.anchor_audit_trail")
def anchor_audit_trail() -> int | None:
    """Pin the audit chain's head with a MAC; the sequence pinned, or None if nothing new."""
    with runtime().database.transaction() as session:
        pinned = audit.anchor(session)
        return pinned.sequence if pinned else None


@app.task(name="beat.tasks.sweep_references")
def sweep_references() -> dict[str, int]:
    """Send the automatic reminders that are due and expire requests not answered in time."""
    rt = runtime()
    reminded = references.send_automatic_reminders(rt.database, link_base=rt.settings.public_base_url)
    expired = references.expire_overdue(rt.database)
    return {"reminded": reminded, "expired": expired}


@app.task(name="beat.tasks.expire_jobs")
def expire_jobs() -> int:
    """Mark published postings past their expiry expired."""
    total = 0
    while True:
        with runtime().database.transaction() as session:
            expired = jobs.expire_jobs(session)
        total += expired
        if expired < jobs.EXPIRY_BATCH:
            return total
