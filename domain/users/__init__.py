"""Accounts: users, passwords, tokens, MFA."""
