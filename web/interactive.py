"""Network work a person waits for on a web thread: "Sync now", CalDAV discovery and the
writability check of a calendar being added (issue 14).

The web server has a few threads (waitress: 8) for everything, feeds included. Ten "Sync now"
clicks against a server that drips its answer once held all of them for 90 s, and a calendar
app's feed GET waited 85 s. So, per process:

- at most `SLOTS` such requests talk to calendar servers at once, each within
  feeds.sources.fetch.INTERACTIVE_SECONDS (the operator's sizes and ports still apply);
- a "Sync now" that finds no free slot is handed to the queue (the background workers) and
  answered at once: the page says the sync was started;
- a discovery that finds no free slot is refused with a sentence to try again shortly (it
  cannot be queued: the person is waiting for the list of calendars).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from calsync.feeds.calendars.sync import SyncOutcome, sync_connection
from calsync.feeds.errors import ValidationError
from calsync.feeds.sources.fetch import FetchLimits, interactive
from calsync.web import db

SLOTS = 3
_slots = threading.BoundedSemaphore(SLOTS)

BUSY = "Several calendar servers are being contacted right now; try again in a minute."


@contextmanager
def slot() -> Iterator[bool]:
    """Yields whether this request may talk to a calendar server now."""
    taken = _slots.acquire(blocking=False)
    try:
        yield taken
    finally:
        if taken:
            _slots.release()


@contextmanager
def limits(field: str = "url") -> Iterator[FetchLimits]:
    """The limits for a discovery or writability check on this thread; ValidationError on
    `field` when every slot is taken."""
    with slot() as taken:
        if not taken:
            raise ValidationError(BUSY, field)
        yield interactive(db.services().sync.limits)


def sync_or_queue(connection_id: int) -> SyncOutcome | None:
    """Sync the connection on this thread within the interactive budget, or, with every slot
    taken, queue it for the background workers: what the sync did, or None when it was queued."""
    services = db.services()
    with slot() as taken:
        if taken:
            ctx = services.sync
            return sync_connection(replace(ctx, limits=interactive(ctx.limits)), connection_id)
    services.jobs.enqueue_sync(connection_id)
    return None
