"""Email: the outbox written in the change's transaction, MIME building, iTIP invitations,
what gets notified, and delivery over SMTP."""
