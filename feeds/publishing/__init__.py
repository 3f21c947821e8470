"""Published feeds: feed tokens, finding a feed by token with its version, rendering VEVENTs
and VCALENDAR bodies, and the caches keyed by versions."""
