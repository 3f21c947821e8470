"""Accounts and secrets: admins and API keys, login throttling, random tokens and their hashes,
and the credentials vault that seals calendar passwords and tokens."""
