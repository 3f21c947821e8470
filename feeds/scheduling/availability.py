"""Availability: working hours minus appointments minus busy blocks from staff calendars.

A staff member whose calendar connection has never synced is *pending*: we do not know when they
are busy, so they cannot be booked (and have no free slots) until it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DateTime, select, type_coerce
from sqlalchemy.orm import Session

from calsync.feeds.company_settings import get_company_settings
from calsync.feeds.errors import ValidationError
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
    Company,
    Connection,
    ConnectionStatus,
    Staff,
)

MAX_RANGE = timedelta(days=366)


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
    # final: reading the columns as plain timestamps skips a per-value conversion call.
    when = _plain if db.dialect.name == "postgresql" else _as_stored
    query = (
        select(when(Appointment.start_at), when(Appointment.end_at))
        .where(
            Appointment.staff_id == staff_id,
            Appointment.status == STATUS_CONFIRMED,
            Appointment.start_at < end,
            Appointment.end_at > start,
        )
        .order_by(Appointment.start_at, Appointment.end_at)
    )
    if exclude_appointment_id is not None:
        query = query.where(Appointment.id != exclude_appointment_id)
    # Core rows (session.connection()), not ORM results: plain column tuples need none of the
    # ORM's machinery, and there may be thousands.
    # .all(): one fetchall instead of a fetch per row when iterating the result.
    found = [Busy(a, b, "appointment") for a, b in db.execute(query).all()]
    # Busy blocks carry no title: only that the time is taken (staff privacy).
    blocks = db.execute(
        select(when(BusyBlock.start_at), when(BusyBlock.end_at))
        .where(BusyBlock.staff_id == staff_id, BusyBlock.start_at < end, BusyBlock.end_at > start)
        .order_by(BusyBlock.start_at, BusyBlock.end_at)
    ).all()
    found.extend([Busy(a, b, "calendar") for a, b in blocks])
    found.sort()  # two sorted runs: Timsort merges them in linear time
    return found


def _plain(column: Any) -> Any:
    return type_coerce(column, DateTime(timezone=True))


def _as_stored(column: Any) -> Any:
    return column


def calendar_blocker(session: Session, staff: Staff) -> str | None:
    """Why this staff member cannot be booked because of their calendar connections, or None.

    Pending (a connection never synced) always blocks; a stale connection blocks only when the
    company's stale_policy says so.
    """
    rows = session.execute(
        select(Connection.name, Connection.last_success_at, Connection.status)
        .where(Connection.staff_id == staff.id)
    ).all()
    for name, last_success, _status in rows:
        if last_success is None:
            return (
                f"{staff.name}'s calendar connection '{name}' has not synced yet, so their busy "
                "time is unknown; try again in a minute or use 'Sync now'."
            )
    if any(status == ConnectionStatus.STALE for _n, _l, status in rows):
        company = session.get(Company, staff.company_id)
        if company is not None and get_company_settings(company).stale_policy == "block":
            return (
                f"{staff.name}'s calendar has not synced for too long, so their busy time may be "
                "out of date; fix the connection (see Sync health) before booking."
            )
    return None


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
        merge([b[:2] for b in busy]),  # (start, end), already sorted: merge's sort is linear
    )
    tz = parse_timezone(staff.timezone)
    slots: list[Interval] = []
    grid = _grid(step)
    for a, b in free:
        if b - a < duration:
            continue  # most gaps between busy blocks are too short: no need to align them
        cursor = _align(a, grid, tz)
        while cursor + duration <= b:
            slots.append((cursor, cursor + duration))
            cursor += step
    return Availability(slots=slots, busy=busy)


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
