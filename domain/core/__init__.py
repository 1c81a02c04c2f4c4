"""Cross-cutting infrastructure: settings, database, crypto, Redis, errors, pagination."""
