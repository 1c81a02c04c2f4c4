"""The Celery app and one module per queue; tasks are thin wrappers over domain services."""

from tasks.app import app

__all__ = ["app"]
