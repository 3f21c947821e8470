"""External calendars of staff members: guarded fetching, ICS and CalDAV reading, busy time."""
