"""The calendar core: publishing, subscriptions, sync and scheduling rules. Never imports flask or web."""
