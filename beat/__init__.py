"""Celery beat: the periodic schedule and periodic tasks; arrives with issue 3."""
