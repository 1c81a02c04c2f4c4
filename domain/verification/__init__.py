"""Proving that a user controls their email address or phone number."""
