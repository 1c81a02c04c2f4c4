"""Celery beat's periodic tasks; the schedule itself is `beat_schedule` in celeryconfig.py."""
