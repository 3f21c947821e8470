"""Weekly working hours in a staff member's own time zone, turned into UTC intervals.

Stored as {"mon": [["09:00", "17:00"]], ...}. Conversion goes through zoneinfo day by day, so a
daylight-saving change moves the UTC interval and 09:00 stays 09:00 on the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calsync.feeds.errors import ValidationError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = dict(zip(DAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
                     strict=True))
Interval = tuple[datetime, datetime]
# merge and subtract work on datetimes and on UTC epoch seconds (availability's integers).
Moment = TypeVar("Moment", datetime, int)


def parse_timezone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    # OSError: a name such as "Europe" that is a folder of the zone database, not a zone.
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
        raise ValidationError(
            f"'{name}' is not a known time zone; use an IANA name such as Europe/Berlin.", field
        ) from exc


def _parse_clock(value: Any, where: str) -> time | None:
    """'HH:MM' as a time; '24:00' (end of day) as None."""
    if not isinstance(value, str) or len(value) != 5 or value[2] != ":":
        day = DAY_NAMES.get(where, where[:1].upper() + where[1:])
        raise ValidationError(f"{day}: write times like 09:00–17:00.", "working_hours")
    if value == "24:00":
        return None
    try:
        return time(int(value[:2]), int(value[3:]))
    except ValueError as exc:
        raise ValidationError(f"{where}: {value!r} is not a time of day.", "working_hours") from exc


def normalise_working_hours(raw: Any) -> dict[str, list[list[str]]]:
    """Validate working hours; intervals come back sorted, and overlaps are refused."""
    if not isinstance(raw, dict):
        raise ValidationError("Working hours are an object keyed by mon..sun.", "working_hours")
    result: dict[str, list[list[str]]] = {}
    for day, intervals in raw.items():
        if day not in DAYS:
            raise ValidationError(
                f"Unknown day {day!r}; use {', '.join(DAYS)}.", "working_hours"
            )
        if not isinstance(intervals, list):
            raise ValidationError(f"{day}: give a list of [start, end] pairs.", "working_hours")
        parsed: list[tuple[time, time | None, list[str]]] = []
        for pair in intervals:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValidationError(f"{day}: each interval is [start, end].", "working_hours")
            start = _parse_clock(pair[0], day)
            end = _parse_clock(pair[1], day)
            if start is None or (end is not None and end <= start):
                raise ValidationError(
                    f"{day}: {pair[0]}–{pair[1]} ends before it starts.", "working_hours"
                )
            parsed.append((start, end, [pair[0], pair[1]]))
        parsed.sort(key=lambda p: p[0])
        for (_, prev_end, prev), (start, _, cur) in zip(parsed, parsed[1:], strict=False):
            if prev_end is None or start < prev_end:
                raise ValidationError(
                    f"{day}: {prev[0]}–{prev[1]} overlaps {cur[0]}–{cur[1]}.", "working_hours"
                )
        result[day] = [p[2] for p in parsed]
    return result


def _local(day: date, clock: time | None, tz: ZoneInfo) -> datetime:
    if clock is None:
        day, clock = day + timedelta(days=1), time(0)
    # A wall time inside a spring-forward gap does not exist; PEP 495 (fold=0) reads it with the
    # offset before the change, which puts it just after the gap. Ambiguous autumn times take
    # the first occurrence. Both are what a person expects of "09:00".
    return datetime.combine(day, clock, tzinfo=tz)


def working_intervals(
    hours: dict[str, Any], tz_name: str, start: datetime, end: datetime
) -> Iterator[Interval]:
    """UTC intervals of working time overlapping [start, end), clipped to it, in order."""
    tz = parse_timezone(tz_name)
    first = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    day = first
    while day <= last:
        for pair in hours.get(DAYS[day.weekday()], []):
            a = _local(day, _parse_clock(pair[0], "working hours"), tz).astimezone(UTC)
            b = _local(day, _parse_clock(pair[1], "working hours"), tz).astimezone(UTC)
            a, b = max(a, start), min(b, end)
            if a < b:
                yield a, b
        day += timedelta(days=1)


def merge(intervals: list[tuple[Moment, Moment]]) -> list[tuple[Moment, Moment]]:
    """Sort and join touching or overlapping intervals."""
    out: list[tuple[Moment, Moment]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def subtract(
    free: list[tuple[Moment, Moment]], busy: list[tuple[Moment, Moment]]
) -> list[tuple[Moment, Moment]]:
    """`free` minus `busy`; both sorted and merged. Linear in their lengths."""
    out: list[tuple[Moment, Moment]] = []
    j = 0
    for a, b in free:
        cur = a
        while j < len(busy) and busy[j][1] <= cur:
            j += 1
        k = j
        while k < len(busy) and busy[k][0] < b:
            if busy[k][0] > cur:
                out.append((cur, busy[k][0]))
            cur = max(cur, busy[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out
