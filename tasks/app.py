"""The Celery app every worker, beat and Flower process runs (`celery -A tasks …`)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from celeryconfig import celery_settings
from domain.core.config import load_settings
from domain.core.logging import configure_logging

app = Celery("deepref", include=["tasks.ai", "tasks.audit", "tasks.email", "tasks.sms", "tasks.sync", "beat.tasks"])
# Read when the configuration is first needed, not at import: importing tasks has no side effects.
app.add_defaults(lambda: celery_settings(load_settings()))


@signals.setup_logging.connect
def _json_logs(**_: Any) -> None:
    """JSON lines like every other process, instead of Celery's own format."""
    configure_logging(os.environ.get("LOG_LEVEL", "info").upper())
