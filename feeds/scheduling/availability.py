"""Availability: working hours minus appointments minus busy blocks from staff calendars.

A staff member whose calendar connection has never synced is *pending*: we do not know when they
are busy, so they cannot be booked (and have no free slots) until it has — for at most the
company's stale_after_hours; then the stale policy decides (feeds.scheduling.calendar_block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DateTime, String, select, type_coerce
from sqlalchemy.orm import Session

from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.calendar_block import calendar_block
from calsync.feeds.scheduling.working_hours import (
    Interval,
    merge,
    parse_timezone,
    subtract,
    working_intervals,
)
from calsync.models import (
    STATUS_CONFIRMED,
    Appointment,
    BusyBlock,
    Staff,
)

MAX_RANGE = timedelta(days=366)
# Booking refuses longer appointments (booking.check_slot). It bounds the appointment query
# from below too: one that overlaps [start, end) starts after start - MAX_DURATION.
MAX_DURATION = timedelta(days=1)


class Busy(NamedTuple):
    """A tuple, not a dataclass: thousands are made per availability request, and tuples are
    built and sorted in C (a staff member's calendars can hold thousands of busy blocks)."""

    start: datetime
    end: datetime
    kind: str  # "appointment" or "calendar" (busy time from the staff member's own calendars)


@dataclass(frozen=True)
class Availability:
    slots: list[Interval]
    busy: list[Busy]
    blocked: str | None = None  # why there are no slots at all (pending or stale calendar)


def check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("Give start and end with a UTC offset, e.g. 2026-05-01T09:00:00Z.", "start")
    if end <= start:
        raise ValidationError("end must be after start.", "end")
    if end - start > MAX_RANGE:
        raise ValidationError("Ask for at most 366 days at a time.", "end")


def busy_times(
    session: Session,
    staff_id: int,
    start: datetime,
    end: datetime,
    exclude_appointment_id: int | None = None,
) -> list[Busy]:
    """Everything that blocks booking this staff member in [start, end), in start order."""
    db = session.connection()
    # On PostgreSQL (sessions in UTC, models.session) the driver's aware UTC datetimes are
    # final: reading the columns as plain timestamps skips a per-value conversion call. SQLite
    # stores UTC text: read with "+00:00" appended, datetime.fromisoformat (C) makes the aware
    # value at once, instead of SQLAlchemy's parser plus UTCDateTime's replace per value.
    postgresql = db.dialect.name == "postgresql"
    when = _plain if postgresql else _utc_text
    read = _same if postgresql else _from_text
    query = (
        select(when(Appointment.start_at), when(Appointment.end_at))
        .where(
            Appointment.staff_id == staff_id,
            Appointment.status == STATUS_CONFIRMED,
            Appointment.start_at < end,
            # A range scan of ix_appointment_staff_start bounded on both sides: with end_at alone
            # the scan read every later appointment of the staff member, so a reschedule's check
            # cost grew with their bookings ahead (issue 17; docs/scale.md).
            Appointment.start_at > start - MAX_DURATION,
            Appointment.end_at > start,
        )
        .order_by(Appointment.start_at, Appointment.end_at)
    )
    if exclude_appointment_id is not None:
        query = query.where(Appointment.id != exclude_appointment_id)
    # Core rows (session.connection()), not ORM results: plain column tuples need none of the
    # ORM's machinery, and there may be thousands.
    # .all(): one fetchall instead of a fetch per row when iterating the result.
    found = [Busy(read(a), read(b), "appointment") for a, b in db.execute(query).all()]
    # Busy blocks carry no title: only that the time is taken (staff privacy).
    blocks = db.execute(
        select(when(BusyBlock.start_at), when(BusyBlock.end_at))
        .where(BusyBlock.staff_id == staff_id, BusyBlock.start_at < end, BusyBlock.end_at > start)
        .order_by(BusyBlock.start_at, BusyBlock.end_at)
    ).all()
    found.extend([Busy(read(a), read(b), "calendar") for a, b in blocks])
    found.sort()  # two sorted runs: Timsort merges them in linear time
    return found


def _plain(column: Any) -> Any:
    return type_coerce(column, DateTime(timezone=True))


def _utc_text(column: Any) -> Any:
    return type_coerce(column, String).concat("+00:00")


def _same(value: Any) -> Any:
    return value


_from_text = datetime.fromisoformat


def calendar_blocker(session: Session, staff: Staff) -> str | None:
    """Why this staff member cannot be booked because of their calendar connections, or None:
    the rule and its sentence are feeds.scheduling.calendar_block's."""
    block = calendar_block(session, staff)
    return block.sentence() if block else None


def find_availability(
    session: Session,
    staff: Staff,
    start: datetime,
    end: datetime,
    duration: timedelta,
    step: timedelta | None = None,
) -> Availability:
    """Bookable slots of `duration` in [start, end), `step` apart, starting on the local clock."""
    check_range(start, end)
    if duration <= timedelta(0) or duration > timedelta(days=1):
        raise ValidationError("duration must be between 1 minute and 24 hours.", "duration")
    step = step or duration
    busy = busy_times(session, staff.id, start, end)
    blocked = calendar_blocker(session, staff)
    if blocked:
        return Availability(slots=[], busy=busy, blocked=blocked)
    free = subtract(
        merge(list(working_intervals(staff.working_hours, staff.timezone, start, end))),
        _merged(busy),
    )
    return Availability(slots=slots_within(free, duration, step, parse_timezone(staff.timezone)),
                        busy=busy)


def _merged(busy: list[Busy]) -> list[Interval]:
    """working_hours.merge for busy times that are already sorted: no copy and no (start, end)
    tuple per period first (thousands of allocations per request, and the garbage collector
    passes they set off)."""
    out: list[Interval] = []
    last_start = last_end = None
    for a, b, _kind in busy:
        if last_end is not None and a <= last_end:
            if b > last_end:
                last_end = b
            continue
        if last_end is not None:
            out.append((last_start, last_end))  # type: ignore[arg-type]
        last_start, last_end = a, b
    if last_end is not None:
        out.append((last_start, last_end))  # type: ignore[arg-type]
    return out


def slots_within(free: list[Interval], duration: timedelta, step: timedelta, tz: object) -> list[Interval]:
    """Slots of `duration` inside the free intervals, `step` apart, on the local clock's grid."""
    slots: list[Interval] = []
    grid = _grid(step)
    for a, b in free:
        if b - a < duration:
            continue  # most gaps between busy blocks are too short: no need to align them
        cursor = _align(a, grid, tz)
        while cursor + duration <= b:
            slots.append((cursor, cursor + duration))
            cursor += step
    return slots


def _grid(step: timedelta) -> timedelta:
    """Where the first slot of a free interval may start: on the largest division of the hour
    that `step` is a multiple of. Counting whole steps from midnight instead would start a
    2-hour service at 10:00 in a day that begins at 09:00 (and never offer 09:00-11:00)."""
    minutes = max(1, round(step / timedelta(minutes=1)))
    return timedelta(minutes=math.gcd(minutes, 60))


def _align(moment: datetime, step: timedelta, tz: object) -> datetime:
    """Round up to the next multiple of `step` counted from local midnight, so a 30-minute grid
    lands on :00 and :30 on the staff member's clock even in a +05:30 zone."""
    local = moment.astimezone(tz)  # type: ignore[arg-type]
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    since = local - midnight
    steps = -(-since // step)  # ceiling division of timedeltas
    return (midnight + steps * step).astimezone(moment.tzinfo)
