"""Business rules: models, services and the infrastructure they share (no web or queue framework)."""
