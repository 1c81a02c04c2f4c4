"""Email and SMS: templates, providers and the notifications that record each message."""
