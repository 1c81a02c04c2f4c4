"""The tamper-evident audit trail: a hash chain of what happened, appended on the `audit` queue."""
