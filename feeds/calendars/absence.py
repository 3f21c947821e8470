"""Confirming that one of our bookings is gone from a windowed calendar before two-way sync
cancels it (feeds.calendars.twoway).

A Graph listing covers the sync window only, so every day some of our bookings drop out of it
(the past edge) and a booking moved out of it in Outlook is `@removed` with reason `changed`:
`confirm_absent` reads each of our bookings that the reading did not vouch for — moved out, or
missing from a windowed listing although the booking lies in the window — by id, while the
store is open; a booking outside the window is left alone without a request.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from calsync.feeds.calendars.changes import ChangeSet
from calsync.feeds.calendars.store import CalendarStore, ItemNotFound
from calsync.models import Appointment, LinkedItem, LinkedItemState

WATCHED = (LinkedItemState.SYNCED, LinkedItemState.PENDING, LinkedItemState.ERROR)


def _overlaps(window: tuple[datetime, datetime], start: datetime | None, end: datetime | None) -> bool:
    return start is not None and end is not None and start < window[1] and end > window[0]


def confirm_absent(sessions: sessionmaker[Session], connection_id: int, store: CalendarStore,
                   changes: ChangeSet) -> int:
    """Read by id each of our bookings that `changes` (a reading of a store that lists a time
    window) did not vouch for: moved out of the window, or missing from a windowed listing
    although the booking lies in it (or may: its last synced time or its appointment's). A
    404/410 makes it a confirmed deletion; otherwise it is still there (outside the window) and
    its current body goes to two-way sync like any change: a move is applied, an unmoved event
    left as it is. A booking outside the listed window is not read at all (every day some drop
    out of it). Any other failure of the read propagates: the sync fails, nothing is cancelled.
    Called while the store is open, with no transaction open; returns how many were read."""
    if not changes.unsure and (changes.window is None or not changes.full):
        return 0  # nothing left the view unconfirmed, and no windowed listing to check against
    with sessions() as s:
        rows = s.execute(
            select(LinkedItem.href, LinkedItem.synced_start, LinkedItem.synced_end, Appointment.start_at,
                   Appointment.end_at)
            .join(Appointment, Appointment.id == LinkedItem.appointment_id)
            .where(LinkedItem.connection_id == connection_id, LinkedItem.href.is_not(None),
                   LinkedItem.state.in_(WATCHED))
        ).all()
    wanted: list[str] = []
    for href, synced_start, synced_end, start_at, end_at in rows:
        if href is None or href in changes.etags:
            continue
        if href in changes.deleted and href not in changes.unsure:
            continue  # reported deleted
        if not changes.full and href not in changes.unsure:
            continue  # not mentioned by an incremental reading: unchanged
        if changes.window is None:
            if changes.full:
                continue  # missing from a listing of the whole calendar: deleted
        elif not (_overlaps(changes.window, synced_start, synced_end)
                  or _overlaps(changes.window, start_at, end_at)):
            # Outside the window as far as we know: missing from it, or leaving it again (our
            # own write of a booking out there), it is not deleted, and not ours to follow.
            continue
        wanted.append(href)
    for href in wanted:
        try:
            item = store.get(href)
        except ItemNotFound:
            changes.deleted.add(href)
            changes.unsure.discard(href)
            continue
        changes.etags[href] = item.etag or ""
        changes.data[href] = item.body
        changes.deleted.discard(href)
        changes.unsure.discard(href)
    return len(wanted)


