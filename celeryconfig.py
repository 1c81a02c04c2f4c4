"""Celery configuration (broker, queues ai/email/sms/audit/sync, routes, reliability); arrives with issue 3."""
