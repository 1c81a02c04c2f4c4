"""Idempotency-Key records: a repeated POST replays the first response."""
