"""The busy blocks of one connection, replaced in the sync's final transaction (feeds.calendars.sync),
and its busy timeline rebuilt from them in the same transaction (feeds.scheduling.busy_timeline)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from calsync.feeds.scheduling.busy_timeline import rebuild
from calsync.models import BusyBlock, Connection


def replace_blocks(
    session: Session, conn: Connection, intervals: list[tuple[str | None, datetime, datetime]],
    hrefs: set[str] | None,
) -> None:
    """Replace the connection's blocks (all of them, or those of `hrefs`) in this transaction."""
    query = delete(BusyBlock).where(BusyBlock.connection_id == conn.id)
    if hrefs is not None:
        if not hrefs:
            intervals = []
        else:
            query = query.where(BusyBlock.item_href.in_(hrefs))
    if hrefs is None or hrefs:
        session.execute(query)
    if intervals:
        session.execute(insert(BusyBlock), [
            {"connection_id": conn.id, "staff_id": conn.staff_id, "item_href": href,
             "start_at": a, "end_at": b} for href, a, b in intervals
        ])
    session.flush()
    conn.busy_count = rebuild(session, conn.id, conn.staff_id)
