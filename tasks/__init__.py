"""The Celery app and one module per queue (ai, email, sms, audit, sync); arrives with issue 3."""
