"""Availability: working hours minus appointments minus busy blocks from staff calendars.

A staff member whose calendar connection has never synced is *pending*: we do not know when they
are busy, so they cannot be booked (and have no free slots) until it has — for at most the
company's stale_after_hours; then the stale policy decides (feeds.scheduling.calendar_block).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, cached_property
from itertools import repeat
from typing import Any, NamedTuple

from sqlalchemy import DateTime, Select, String, bindparam, select, type_coerce
from sqlalchemy.orm import Session

from calsync.feeds.errors import ValidationError
from calsync.feeds.scheduling.busy_timeline import (
    seconds_ceil,
    seconds_floor,
    staff_runs,
    subtract_run,
    to_datetime,
)
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
    Staff,
)

MAX_RANGE = timedelta(days=366)
# Booking refuses longer appointments (booking.check_slot). It bounds the appointment query
# from below too: one that overlaps [start, end) starts after start - MAX_DURATION.
MAX_DURATION = timedelta(days=1)


class Busy(NamedTuple):
    """A tuple, not a dataclass: built and sorted in C."""

    start: datetime
    end: datetime
    kind: str  # "appointment" or "calendar" (busy time from the staff member's own calendars)


# (start, end, kind) in UTC epoch seconds: availability works in integers, and makes datetimes
# only for the slots it offers and, when asked, for the busy list.
SecondsBusy = tuple[int, int, str]


@dataclass(frozen=True)
class BusySeconds:
    """What blocks booking in a range, in UTC epoch seconds: the appointments as pairs, and the
    calendar busy time as each connection's runs of starts and ends (busy_timeline.staff_runs),
    kept as arrays so availability never makes a Python object per busy block."""

    appointments: list[tuple[int, int]]
    runs: list[tuple[array[int], array[int]]]

    def items(self) -> list[SecondsBusy]:
        found = [(a, b, "appointment") for a, b in self.appointments]
        for starts, ends in self.runs:
            found.extend(zip(starts, ends, repeat("calendar")))
        found.sort()
        return found


@dataclass(frozen=True)
class Availability:
    slots: list[Interval]
    busy_seconds: BusySeconds
    blocked: str | None = None  # why there are no slots at all (pending or stale calendar)

    @cached_property
    def busy(self) -> list[Busy]:
        """What blocks booking in the range, in start order: the staff member's appointments,
        and their calendars' busy time (each connection's blocks merged, without titles)."""
        return [Busy(to_datetime(a), to_datetime(b), kind) for a, b, kind in self.busy_seconds.items()]


def check_range(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValidationError("Give start and end with a UTC offset, e.g. 2026-05-01T09:00:00Z.", "start")
    if end <= start:
        raise ValidationError("The end time must be after the start time.", "end")
    if end - start > MAX_RANGE:
        raise ValidationError("Ask for at most 366 days at a time.", "end")


def busy_seconds(
    session: Session,
    staff_id: int,
    start: datetime,
    end: datetime,
    exclude_appointment_id: int | None = None,
) -> BusySeconds:
    """Everything that blocks booking this staff member in [start, end), in UTC epoch seconds
    (appointments rounded outwards to whole seconds, as busy timelines are)."""
    db = session.connection()
    postgresql = db.dialect.name == "postgresql"
    read = _same if postgresql else _from_text
    query = _appointments_query(postgresql, exclude_appointment_id is not None)
    params = {"staff_id": staff_id, "start": start, "end": end, "earliest": start - MAX_DURATION,
              "exclude": exclude_appointment_id}
    # Core rows (session.connection()), not ORM results; .all(): one fetchall.
    rows = db.execute(query, params).all()
    appointments = [(seconds_floor(read(a)), seconds_ceil(read(b))) for a, b in rows]
    # Calendar busy time from the connections' packed timelines (one row each, sliced to the
    # range), not from thousands of busy_block rows. No titles: only that the time is taken.
    return BusySeconds(appointments, staff_runs(db, staff_id, seconds_floor(start), seconds_ceil(end)))


@cache
def _appointments_query(postgresql: bool, excluding: bool) -> Select[Any]:
    """The confirmed appointments overlapping [start, end), built once per variant: building
    the statement cost more than SQLite took to run it (issue 17, availability).

    On PostgreSQL (sessions in UTC, models.session) the driver's aware UTC datetimes are
    final: reading the columns as plain timestamps skips a per-value conversion call. SQLite
    stores UTC text: read with "+00:00" appended, datetime.fromisoformat (C) makes the aware
    value at once, instead of SQLAlchemy's parser plus UTCDateTime's replace per value."""
    when = _plain if postgresql else _utc_text
    query = (
        select(when(Appointment.start_at), when(Appointment.end_at))
        .where(
            Appointment.staff_id == bindparam("staff_id"),
            Appointment.status == STATUS_CONFIRMED,
            Appointment.start_at < bindparam("end"),
            # A range scan of ix_appointment_staff_start bounded on both sides: with end_at alone
            # the scan read every later appointment of the staff member, so a reschedule's check
            # cost grew with their bookings ahead (issue 17; docs/scale.md).
            Appointment.start_at > bindparam("earliest"),
            Appointment.end_at > bindparam("start"),
        )
    )
    if excluding:
        query = query.where(Appointment.id != bindparam("exclude"))
    return query


def busy_times(
    session: Session,
    staff_id: int,
    start: datetime,
    end: datetime,
    exclude_appointment_id: int | None = None,
) -> list[Busy]:
    """busy_seconds as datetimes (the booking check's short ranges)."""
    found = busy_seconds(session, staff_id, start, end, exclude_appointment_id)
    return [Busy(to_datetime(a), to_datetime(b), kind) for a, b, kind in found.items()]


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
    busy = busy_seconds(session, staff.id, start, end)
    blocked = calendar_blocker(session, staff)
    if blocked:
        return Availability(slots=[], busy_seconds=busy, blocked=blocked)
    # Working time rounded inwards to whole seconds (busy time is rounded outwards): a slot
    # never starts before the range asked for.
    work = [(seconds_ceil(a), seconds_floor(b))
            for a, b in merge(list(working_intervals(staff.working_hours, staff.timezone, start, end)))]
    # The (few) appointments first, while the working time is a few intervals a day; then each
    # connection's spans, disjoint and sorted already, run by run, keeping only the pieces a
    # slot fits in (no merged list of every busy block is made, nor of every gap between them).
    whole = int(duration.total_seconds())
    free = subtract(work, merge(busy.appointments))
    for starts, ends in busy.runs:
        free = subtract_run(free, starts, ends, shortest=whole)
    wide = [(to_datetime(a), to_datetime(b)) for a, b in free if b - a >= whole]
    return Availability(slots=slots_within(wide, duration, step, parse_timezone(staff.timezone)),
                        busy_seconds=busy)


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
