"""A connection's busy time as one packed row: its busy blocks merged into sorted, disjoint
spans of UTC epoch seconds (models.BusyTimeline).

Why: availability over 60 days for a staff member whose calendar holds 5,000 events read 5,000
busy_block rows and made 10,000 datetimes per request; reading them took longer than the whole
answer may take (issue 17, docs/scale.md). The timeline is rebuilt from the connection's blocks
in the same transaction that writes them (busy_blocks.replace_blocks), so it is never older than
the blocks; readers slice it with bisect and touch only the spans of the range they ask for.

Seconds, rounded outwards (start down, end up): calendar apps work in whole seconds, and a span
that grows by under a second can only block, never free, time.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, bisect_right
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Connection as DbConnection
from sqlalchemy.orm import Session

from calsync.feeds.scheduling.working_hours import merge
from calsync.models import BusyBlock, BusyTimeline

Span = tuple[int, int]
_BIG_ENDIAN = sys.byteorder == "big"


def seconds_floor(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def seconds_ceil(moment: datetime) -> int:
    return math.ceil(moment.timestamp())


def to_datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def pack(spans: list[Span]) -> bytes:
    """Merged spans as little-endian int64 pairs (the row's bytes mean the same on any host)."""
    flat = array("q", [v for span in spans for v in span])
    if _BIG_ENDIAN:
        flat.byteswap()
    return flat.tobytes()


def unpack(data: bytes) -> array[int]:
    flat = array("q")
    flat.frombytes(data)
    if _BIG_ENDIAN:
        flat.byteswap()
    return flat


def rebuild(session: Session, connection_id: int, staff_id: int) -> int:
    """Make the connection's timeline from its busy_block rows (flushed); returns their count."""
    rows = session.execute(
        select(BusyBlock.start_at, BusyBlock.end_at).where(BusyBlock.connection_id == connection_id)
    ).all()
    spans = merge([(seconds_floor(a), seconds_ceil(b)) for a, b in rows if b > a])
    session.execute(delete(BusyTimeline).where(BusyTimeline.connection_id == connection_id))
    session.execute(
        insert(BusyTimeline).values(connection_id=connection_id, staff_id=staff_id, spans=pack(spans))
    )
    return len(rows)


def forget(session: Session, connection_id: int) -> None:
    """Drop a connection's blocks and timeline (before the connection itself is deleted: the
    ORM's delete does not wait for the database's cascade)."""
    session.execute(delete(BusyBlock).where(BusyBlock.connection_id == connection_id))
    session.execute(delete(BusyTimeline).where(BusyTimeline.connection_id == connection_id))


# Built once: constructing a statement costs more than SQLite takes to run it (availability).
_STAFF_TIMELINES = select(BusyTimeline.spans).where(BusyTimeline.staff_id == bindparam("staff_id"))


def staff_runs(db: DbConnection, staff_id: int, start: int, end: int) -> list[tuple[array[int], array[int]]]:
    """The staff member's calendar busy time that overlaps [start, end): per connection, the
    starts and the ends of its spans (sorted and disjoint, so both are ascending), as arrays."""
    runs = []
    for (data,) in db.execute(_STAFF_TIMELINES, {"staff_id": staff_id}):
        flat = unpack(data)
        starts, ends = flat[0::2], flat[1::2]  # C-level copies, no Python object per span
        # The first span that ends after `start`, and the first that starts at or after `end`.
        first, last = bisect_right(ends, start), bisect_left(starts, end)
        if first < last:
            runs.append((starts[first:last], ends[first:last]))
    return runs


def staff_spans(db: DbConnection, staff_id: int, start: int, end: int) -> list[Span]:
    """staff_runs as (start, end) pairs, connection after connection (not merged across them)."""
    return [span for starts, ends in staff_runs(db, staff_id, start, end)
            for span in zip(starts, ends, strict=True)]


def subtract_run(free: list[Span], starts: array[int], ends: array[int], shortest: int = 1) -> list[Span]:
    """`free` (sorted, disjoint) minus one connection's spans. Each free interval bisects to the
    spans that overlap it, so busy time outside working hours (most of a calendar's events, for
    office hours) is never visited one by one. Pieces shorter than `shortest` seconds are left
    out: availability passes the slot length, since no slot fits in one and subtracting more
    busy time only makes pieces shorter (a calendar with 5,000 short events leaves thousands of
    gaps too short for any booking, and each would be visited again by every later step)."""
    shortest = max(1, shortest)
    out: list[Span] = []
    for a, b in free:
        i = bisect_right(ends, a)
        cur = a
        while i < len(starts) and starts[i] < b:
            if starts[i] - cur >= shortest:
                out.append((cur, starts[i]))
            if ends[i] > cur:
                cur = ends[i]
            i += 1
        if b - cur >= shortest:
            out.append((cur, b))
    return out
