"""Busy time: calendar bytes → busy intervals in UTC, within a window and within caps.

One entry point, `extract_busy(body, options)`. The rules (PROTOCOL.md, "CalDAV"):
OPAQUE and not CANCELLED is busy; TRANSPARENT ("Free") and CANCELLED are not;
X-MICROSOFT-CDO-BUSYSTATUS FREE is free; EXDATE and RECURRENCE-ID overrides are honoured
(recurring-ical-events does the expansion). All-day events follow the connection's policy.
Only times are kept: no titles, attendees or descriptions leave this module (staff privacy).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
import x_wr_timezone

from feeds.errors import CalsyncError

# Cost guard for recurrences: an RRULE must not make expansion iterate more than this many
# times just to reach the window (dateutil walks from DTSTART).
MAX_ITERATIONS_TO_WINDOW = 200_000
FREQ_SECONDS = {"SECONDLY": 1, "MINUTELY": 60, "HOURLY": 3600, "DAILY": 86400, "WEEKLY": 604800}


class CalendarDataError(CalsyncError):
    """The fetched data is not a usable calendar; `kind` says why, the message what to do."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class BusyOptions:
    window_start: datetime
    window_end: datetime
    timezone: str = "UTC"  # the staff member's zone, for floating and all-day times
    all_day: str = "busy"  # busy | ignore
    treat_all_busy: bool = False  # ignore TRANSP/BUSYSTATUS ("every event blocks")
    max_occurrences: int = 10_000
    max_seconds: float = 20.0


@dataclass(frozen=True)
class BusyResult:
    intervals: list[tuple[datetime, datetime]]
    events: int  # components read
    skipped: int  # components left out for cost or bad data
    truncated: bool  # the occurrence cap was reached


def parse_calendars(body: bytes) -> list[icalendar.Calendar]:
    """Parse iCalendar bytes; HTML and other non-calendars get a sentence, not a stack trace."""
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        raise CalendarDataError("empty", "The address returned an empty file, not a calendar.")
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise CalendarDataError(
            "not_calendar",
            "The address returned a web page, not a calendar: copy the calendar's iCal/ICS "
            "address (often called 'secret address in iCal format').",
        )
    if b"begin:vcalendar" not in body[:4096].lower():
        raise CalendarDataError("not_calendar", "The address did not return an iCalendar (.ics) file.")
    try:
        calendars = icalendar.Calendar.from_ical(body, multiple=True)
    except Exception as exc:  # icalendar raises ValueError, KeyError, ... on broken input
        raise CalendarDataError(
            "invalid", "The calendar file is damaged and could not be read."
        ) from exc
    out = []
    for cal in calendars:
        try:
            # Google exports times in UTC plus X-WR-TIMEZONE; make them proper zoned times.
            out.append(x_wr_timezone.to_standard(cal))
        except Exception:
            out.append(cal)
    return out


def _as_utc(value: date | datetime, tz: ZoneInfo) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # floating time: the staff member's wall clock
            value = value.replace(tzinfo=tz)
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=tz).astimezone(UTC)


def _is_busy(component: Any, treat_all_busy: bool) -> bool:
    if str(component.get("STATUS", "")).upper() == "CANCELLED":
        return False
    if treat_all_busy:
        return True
    if str(component.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return False
    status = str(component.get("X-MICROSOFT-CDO-BUSYSTATUS", "")).upper()
    return status != "FREE"


def _unusable(component: Any, options: BusyOptions) -> bool:
    """True for an event that cannot be read (no single DTSTART) or whose recurrence would
    take too long to expand up to the window."""
    start = component.get("DTSTART")
    if start is None or isinstance(start, list) or not hasattr(start, "dt"):
        return True
    if isinstance(component.get("DTEND"), list) or isinstance(component.get("RRULE"), list):
        return True
    rrule = component.get("RRULE")
    if rrule is None:
        return False
    rules = [rrule]
    first = start.dt
    first_utc = _as_utc(first, ZoneInfo("UTC"))
    for rule in rules:
        freq = str((rule.get("FREQ") or [""])[0]).upper()
        if freq in ("SECONDLY", "MINUTELY"):
            # No real appointment repeats every second or minute; expanding one is only cost.
            return True
        interval = int((rule.get("INTERVAL") or [1])[0] or 1)
        step = FREQ_SECONDS.get(freq)
        if step is None:
            continue
        # BYxxx parts can multiply occurrences per period; count them in.
        factor = 1
        for part in ("BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY"):
            if rule.get(part):
                factor *= max(1, len(rule.get(part)))
        period = step * max(1, interval)
        gap = max(0.0, (options.window_start - first_utc).total_seconds())
        if gap / period * factor > MAX_ITERATIONS_TO_WINDOW:
            return True
        inside = (options.window_end - max(options.window_start, first_utc)).total_seconds()
        if inside / period * factor > options.max_occurrences:
            return True
    return False


def extract_busy(body: bytes | list[icalendar.Calendar], options: BusyOptions) -> BusyResult:
    calendars = parse_calendars(body) if isinstance(body, bytes) else body
    tz = ZoneInfo(options.timezone)
    deadline = time.monotonic() + options.max_seconds
    intervals: list[tuple[datetime, datetime]] = []
    events = skipped = 0
    truncated = False
    for cal in calendars:
        # Drop the series that would cost too much before the expander ever sees them.
        for component in list(cal.walk("VEVENT")):
            events += 1
            try:
                unusable = _unusable(component, options)
            except Exception:
                unusable = True
            if unusable:
                skipped += 1
                _remove(cal, component)
        if time.monotonic() > deadline:
            raise CalendarDataError("too_slow", "The calendar is too large to read in time.")
        try:
            # between() expands the window in one pass; after() re-expands as it pages and
            # costs quadratic time on long series.
            occurrences = recurring_ical_events.of(cal, skip_bad_series=True).between(
                options.window_start, options.window_end
            )
        except Exception as exc:
            raise CalendarDataError(
                "invalid", "The calendar contains dates or repeat rules that could not be read."
            ) from exc
        for occurrence in occurrences:
            interval = _busy_interval(occurrence, options, tz)
            if interval is None:
                continue
            if len(intervals) >= options.max_occurrences:
                truncated = True
                break
            intervals.append(interval)
    return BusyResult(sorted(set(intervals)), events, skipped, truncated)


def _busy_interval(
    occurrence: Any, options: BusyOptions, tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    """The busy part of one occurrence inside the window, or None when it blocks nothing."""
    start = occurrence.get("DTSTART")
    if start is None or not hasattr(start, "dt"):
        return None
    all_day = not isinstance(start.dt, datetime)
    if all_day and options.all_day == "ignore":
        return None
    if not _is_busy(occurrence, options.treat_all_busy):
        return None
    start_utc = _as_utc(start.dt, tz)
    end = occurrence.get("DTEND")
    end_utc = _as_utc(end.dt, tz) if end is not None and hasattr(end, "dt") else start_utc
    if end_utc <= start_utc:
        if not all_day:
            return None  # a zero-length event blocks nothing
        end_utc = _as_utc(start.dt + timedelta(days=1), tz)
    start_utc, end_utc = max(start_utc, options.window_start), min(end_utc, options.window_end)
    return (start_utc, end_utc) if start_utc < end_utc else None


def _remove(cal: icalendar.Calendar, component: Any) -> None:
    """Remove a component (and, for a series, its overrides sharing the UID)."""
    uid = component.get("UID")
    for holder in [cal, *cal.subcomponents]:
        holder.subcomponents[:] = [
            c for c in holder.subcomponents
            if c is not component and not (uid is not None and c.name == "VEVENT" and c.get("UID") == uid)
        ]
