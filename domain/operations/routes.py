"""Which task runs each kind of operation (and each wake-up), and on which queue.

The domain names tasks without importing Celery; `tests/integration/test_task_routes.py`
checks that each route names a task the workers register, on the queue its module serves.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRoute:
    """Which task runs an operation, and on which queue."""

    name: str
    queue: str


DELIVER_EMAIL = TaskRoute("tasks.email.deliver_notification", "email")
DELIVER_SMS = TaskRoute("tasks.sms.deliver_notification", "sms")
PROBE = TaskRoute("tasks.sync.probe", "sync")
# A wake-up, not an operation: appends the audit trail's pending facts (see domain/audit).
DRAIN_AUDIT = TaskRoute("tasks.audit.drain", "audit")
DELIVER_REFERENCE_EMAIL = TaskRoute("tasks.email.deliver_reference_request", "email")
DELIVER_REFERENCE_SMS = TaskRoute("tasks.sms.deliver_reference_request", "sms")
VERIFY_REFERENCE = TaskRoute("tasks.ai.verify_reference", "ai")
ANALYSE_JOB = TaskRoute("tasks.ai.analyse_job", "ai")
