"""What changed in a calendar store since the last sync, with the bodies of new and changed
items: the reading half of a CalDAV connection's sync, on the calendar-store interface only.

With a sync token, `changes_since` alone answers "what changed" (an empty answer when nothing
did), so the collection tag is not asked for: on servers that compute both by reading the whole
collection (Radicale) that would double the server's work on every sync. Without a token (a
server without RFC 6578, or after we created items) the collection tag, one PROPFIND, spares the
full listing when it has not moved. A token the store refuses means a full listing, compared by
ETag against what the last sync stored (vdirsyncer's status).

A listing covers the whole calendar (CalDAV, Google) or only a time window (Graph's
calendarView): an item missing from a windowed listing, or reported as having left the window,
is *unsure* — gone from the view, not known to be deleted. Busy time drops it (it is outside
the window); two-way sync must not take it for a deletion of a booking (feeds.calendars.twoway
confirm_absent reads such bookings by id first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from calsync.feeds.calendars.store import CalendarStore, InvalidSyncToken


@dataclass
class ChangeSet:
    """What changed in a calendar since the last sync."""

    etags: dict[str, str]  # href → ETag of present items this reading reported
    deleted: set[str]  # hrefs gone from the view (for busy time)
    full: bool  # a listing, not changes (items of the listed span not in it are gone)
    sync_token: str | None
    ctag: str | None
    data: dict[str, bytes] = field(default_factory=dict)  # href → iCalendar body, for loaded items
    # The span the reading covered; None: the whole calendar (a listing's absence is deletion).
    window: tuple[datetime, datetime] | None = None
    # Those of `deleted` not known to be deleted: missing from a windowed listing, or moved
    # out of the window. Never a reason to cancel a booking until read by id.
    unsure: set[str] = field(default_factory=set)


def read_changes(
    store: CalendarStore, *, sync_token: str | None, ctag: str | None, known: dict[str, str],
    load_all: bool = False,
) -> ChangeSet | None:
    """Changes since `sync_token`, with the bodies of new and changed items loaded; None when
    nothing changed. `known` maps hrefs to the ETags stored at the last sync; `load_all` loads
    every item (the sync window moved)."""
    incremental = bool(sync_token) and not load_all
    if incremental:
        assert sync_token is not None
        try:
            changes = store.changes_since(sync_token)
        except InvalidSyncToken:
            pass
        else:
            if not changes.changed and not changes.deleted and changes.token == sync_token:
                return None  # the token did not move: nothing changed
            return _loaded(store, ChangeSet(etags=changes.changed, deleted=set(changes.deleted), full=False,
                                            sync_token=changes.token, ctag=None, window=changes.window,
                                            unsure=set(changes.left) & set(changes.deleted)), known, load_all)
    new_ctag = None
    if not incremental:
        new_ctag = store.collection_tag()
        if ctag and new_ctag and new_ctag == ctag and not load_all:
            return None
    listing = store.list()
    missing = set(known) - set(listing.etags)
    return _loaded(store, ChangeSet(etags=listing.etags, deleted=missing, full=True, sync_token=listing.token,
                                    ctag=new_ctag, window=listing.window,
                                    unsure=set(missing) if listing.window is not None else set()),
                   known, load_all)


def _loaded(store: CalendarStore, changes: ChangeSet, known: dict[str, str], load_all: bool) -> ChangeSet:
    wanted = [h for h, e in changes.etags.items() if load_all or known.get(h) != e]
    if wanted:
        changes.data = {href: item.body for href, item in store.get_many(wanted).items()}
    return changes


def item_uid(body: bytes) -> str | None:
    """The UID of a calendar item, read from its first UID line (enough to match our bookings)."""
    for line in body.splitlines():
        if line.upper().startswith(b"UID:"):
            return line[4:].strip().decode("utf-8", "replace")[:500]
    return None
