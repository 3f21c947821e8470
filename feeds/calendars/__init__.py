"""Staff members' own calendars: connections and adding them, one-way sync into busy time,
pushes into linked calendars, two-way sync and its conflicts, connection health."""
