"""Busy time: calendar bytes → busy intervals in UTC, within a window and within caps.

One entry point, `extract_busy(body, options)`. The rules (docs/protocol.md, "CalDAV"):
OPAQUE and not CANCELLED is busy; TRANSPARENT ("Free") and CANCELLED are not;
X-MICROSOFT-CDO-BUSYSTATUS FREE is free; EXDATE and RECURRENCE-ID overrides are honoured
(recurring-ical-events does the expansion, one series per UID). All-day events follow the
connection's policy. Only times are kept: no titles, attendees or descriptions leave this module
(staff privacy).

Fetched calendars are untrusted, so every cost is bounded (docs/protocol.md: "a recurrence like
COUNT=1000000000 or FREQ=SECONDLY must cost bounded time"):

- a series whose rule could yield too many dates before or inside the window is left out
  before it is expanded (`_too_costly`), and so is a series that cannot be read: one broken
  event never hides the rest of the calendar;
- VTIMEZONE rules, which are expanded from their DTSTART whenever a time in the zone is
  converted, are dropped unless they are the small yearly rules real time zones use
  (`tame_timezone_rules`);
- expansion runs under a deadline (`max_seconds`, a tenth of it per series), checked for every
  occurrence and inside dateutil's rule iteration (feeds.sources.deadline), where a rule that
  no date satisfies would otherwise walk on to the year 9999. Parsing costs time in proportion
  to the size, which the fetch caps;
- a calendar's VTIMEZONEs are its own (feeds.sources.time_zones): never cached process-wide,
  never used for another calendar, and their rules stopped by the calendar's deadline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events
import x_wr_timezone

from calsync.feeds.errors import CalsyncError
from calsync.feeds.sources.deadline import DeadlinePassed, check_deadline, deadline
from calsync.feeds.sources.time_zones import parse_with_own_zones

# A series may make the expansion step through at most this many dates before the window
# (dateutil walks from DTSTART): a daily series since 1900 is 47,000.
MAX_ITERATIONS_TO_WINDOW = 200_000
PERIOD_SECONDS = {
    "HOURLY": 3600,
    "DAILY": 86400,
    "WEEKLY": 7 * 86400,
    "MONTHLY": 28 * 86400,
    "YEARLY": 365 * 86400,
}  # the shortest of each
DAYS_PER_PERIOD = {"WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}
# Real VTIMEZONE rules change the offset once or twice a year (RFC 5545 §3.6.5).
MAX_ZONE_DATES_PER_YEAR = 50
MAX_ZONE_COUNT = 10_000
SERIES_SHARE = 0.1  # of max_seconds, for one series
TOO_SLOW = "The calendar is too large to read in time."


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


# --- parsing ----------------------------------------------------------------------------------

# Line folding and line ends exactly as icalendar's parser reads them (RFC 5545 §3.1), so the
# lines seen here are the lines it sees.
_UNFOLD = re.compile(rb"(?:(?<!\n)\r\n|(?<![\r\n])\n)(?:\r?\n)*[ \t]")
_NEWLINE = re.compile(rb"\r?\n")


def _split_line(line: bytes) -> tuple[bytes, bytes]:
    """(NAME, value) of a content line; the value starts after the first colon outside quotes."""
    quoted = False
    for i, char in enumerate(line):
        if char == 0x22:  # "
            quoted = not quoted
        elif char == 0x3A and not quoted:  # :
            return re.split(rb"[;:]", line[:i], maxsplit=1)[0].strip().upper(), line[i + 1 :]
    return line.strip().upper(), b""


def _tame_rule(value: bytes) -> bool:
    """Whether a VTIMEZONE RRULE is small enough to expand in full: yearly, a few dates a year."""
    parts: dict[bytes, list[bytes]] = {}
    for part in value.upper().split(b";"):
        name, _, items = part.partition(b"=")
        parts[name.strip()] = items.split(b",")
    if parts.get(b"FREQ") != [b"YEARLY"]:
        return False
    count = parts.get(b"COUNT", [b"0"])[0].strip()
    if not count.isdigit() or int(count) > MAX_ZONE_COUNT:
        return False
    per_year = 1
    for name, values in parts.items():
        if name.startswith(b"BY"):
            per_year *= len(values)
    return per_year <= MAX_ZONE_DATES_PER_YEAR


def tame_timezone_rules(body: bytes) -> bytes:
    """A VTIMEZONE rule is expanded from its DTSTART (often 1601) whenever a time in the zone is
    converted, and the transitions are kept: FREQ=MINUTELY is 229 million of them, COUNT=10^9 a
    billion. A rule that is not yearly, or could give more than a few dates a year, is dropped;
    its STANDARD/DAYLIGHT part keeps the offset from its DTSTART. (A yearly rule that no date
    satisfies still walks to the year 9999 once, about a second, and is cached after that.)"""
    if b"VTIMEZONE" not in body.upper():
        return body
    lines = _NEWLINE.split(_UNFOLD.sub(b"", body))
    kept, depth = [], 0
    for line in lines:
        name, value = _split_line(line)
        if name == b"BEGIN" and value.upper() == b"VTIMEZONE":
            depth += 1
        elif name == b"END" and value.upper() == b"VTIMEZONE":
            depth = max(0, depth - 1)
        elif depth and name == b"RRULE" and not _tame_rule(value):
            continue
        kept.append(line)
    return body if len(kept) == len(lines) else b"\r\n".join(kept)


def _sniff(body: bytes) -> None:
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        raise CalendarDataError("empty", "The address returned an empty file, not a calendar.")
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise CalendarDataError(
            "not_calendar",
            "This address is a web page, not a calendar: copy the calendar's iCal/ICS "
            "address (often called 'secret address in iCal format').",
        )
    if b"begin:vcalendar" not in _UNFOLD.sub(b"", body[:4096]).lower():
        raise CalendarDataError("not_calendar", "The address did not return an iCalendar (.ics) file.")


def parse_calendars(body: bytes, max_seconds: float = 20.0) -> list[icalendar.Calendar]:
    """Parse iCalendar bytes; HTML and other non-calendars get a sentence, not a stack trace.
    Parsing costs time in proportion to the size, which the fetch caps (CALSYNC_FETCH_MAX_BYTES);
    whatever time zone rules it expands stop at `max_seconds` (BusyOptions.max_seconds)."""
    _sniff(body)
    try:
        with deadline(max_seconds) as limit:
            limit.interrupt_zones()
            calendars = parse_with_own_zones(tame_timezone_rules(body))
    except DeadlinePassed:
        raise CalendarDataError("too_slow", TOO_SLOW) from None
    except Exception as exc:  # icalendar raises ValueError, KeyError, ... on broken input
        raise CalendarDataError("invalid", "The calendar file is damaged and could not be read.") from exc
    out = []
    for cal in calendars:
        try:
            # Google exports times in UTC plus X-WR-TIMEZONE; make them proper zoned times.
            out.append(x_wr_timezone.to_standard(cal))
        except Exception:  # an unknown zone name there: keep the times as they are
            out.append(cal)
    return out


# --- cost of a series -------------------------------------------------------------------------


def _as_utc(value: date | datetime, tz: ZoneInfo) -> datetime:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:  # floating time or a day: the staff member's wall clock
        value = value.replace(tzinfo=tz)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # within hours of the year 1 or 9999: beyond any sync window
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def _dates_per_period(rule: Any, freq: str) -> int:
    """An upper bound of the dates one period of a rule yields (dateutil's expansion)."""

    def n(part: str) -> int:
        return max(1, len(rule.get(part) or []))

    times = {"HOURLY": n("BYMINUTE") * n("BYSECOND")}.get(freq, n("BYHOUR") * n("BYMINUTE") * n("BYSECOND"))
    days = 1
    if freq in DAYS_PER_PERIOD:
        bounds = [DAYS_PER_PERIOD[freq]]
        if rule.get("BYDAY"):
            bounds.append(n("BYDAY") * {"YEARLY": 53, "MONTHLY": 5, "WEEKLY": 1}[freq])
        if rule.get("BYMONTHDAY"):
            bounds.append(n("BYMONTHDAY") * (n("BYMONTH") * 12 if freq == "YEARLY" else 1))
        if rule.get("BYYEARDAY"):
            bounds.append(n("BYYEARDAY"))
        if rule.get("BYWEEKNO"):
            bounds.append(n("BYWEEKNO") * 7)
        if len(bounds) == 1:  # no day part: dateutil repeats DTSTART's day (in each BYMONTH)
            bounds.append(n("BYMONTH") if freq == "YEARLY" else 1)
        days = min(bounds)
    per_period = days * times
    return min(per_period, n("BYSETPOS")) if rule.get("BYSETPOS") else per_period


def _too_costly(component: Any, options: BusyOptions) -> bool:
    """True for an event that cannot be read (no single DTSTART) or whose recurrence could yield
    too many dates on the way to the window or inside it."""
    start = component.get("DTSTART")
    if start is None or isinstance(start, list) or not hasattr(start, "dt"):
        return True
    if isinstance(component.get("DTEND"), list) or isinstance(component.get("RRULE"), list):
        return True
    rule = component.get("RRULE")
    if rule is None:
        return False
    freq = str((rule.get("FREQ") or [""])[0]).upper()
    if freq in ("SECONDLY", "MINUTELY"):
        # No real appointment repeats every second or minute; expanding one is only cost.
        return True
    if freq not in PERIOD_SECONDS:
        return False  # the expander refuses it
    interval = int((rule.get("INTERVAL") or [1])[0] or 1)
    period = PERIOD_SECONDS[freq] * max(1, interval)
    per_period = _dates_per_period(rule, freq)
    count = int((rule.get("COUNT") or [0])[0] or 0)
    first = _as_utc(start.dt, ZoneInfo("UTC"))
    before = max(0.0, (options.window_start - first).total_seconds()) / period + 1
    inside = (options.window_end - max(options.window_start, first)).total_seconds() / period + 1
    if count > 0:
        before, inside = min(before, count / per_period), min(inside, count / per_period)
    return before * per_period > MAX_ITERATIONS_TO_WINDOW or inside * per_period > options.max_occurrences


# --- expansion --------------------------------------------------------------------------------


def _vevents(cal: icalendar.Calendar) -> list[Any]:
    """Every VEVENT, at any depth, in document order — without recursion: a hostile file can
    nest components deeper than Python's stack (icalendar's walk() recurses)."""
    found: list[Any] = []
    stack: list[Any] = [cal]
    while stack:
        component = stack.pop()
        if component.name == "VEVENT":
            found.append(component)
        stack.extend(reversed(component.subcomponents))
    return found


def extract_busy(body: bytes | list[icalendar.Calendar], options: BusyOptions) -> BusyResult:
    try:
        with deadline(options.max_seconds) as limit:
            limit.interrupt_zones()  # the calendar's own zones (parse_calendars): safe to stop
            return _extract(body, options)
    except DeadlinePassed:
        raise CalendarDataError("too_slow", TOO_SLOW) from None


def _extract(body: bytes | list[icalendar.Calendar], options: BusyOptions) -> BusyResult:
    calendars = parse_calendars(body, options.max_seconds) if isinstance(body, bytes) else body
    tz = ZoneInfo(options.timezone)
    intervals: list[tuple[datetime, datetime]] = []
    events = skipped = 0
    for cal in calendars:
        if str(cal.get("CALSCALE", "GREGORIAN")).upper() != "GREGORIAN":
            raise CalendarDataError(
                "invalid", "The calendar uses a calendar system other than the Gregorian one."
            )
        series: dict[str, list[Any]] = {}
        for component in _vevents(cal):
            events += 1
            # One series per UID: the rule and its overrides (RECURRENCE-ID), as the expander
            # groups them; an event without UID is a series of its own.
            series.setdefault(str(component.get("UID", id(component))), []).append(component)
        for components in series.values():
            check_deadline()
            found = _expand(components, options, tz)
            if found is None:
                skipped += len(components)
                continue
            room = options.max_occurrences - len(intervals)
            intervals.extend(found[:room])
            if len(found) > room:
                return BusyResult(sorted(set(intervals)), events, skipped, True)
    return BusyResult(sorted(set(intervals)), events, skipped, False)


def _expand(
    components: list[Any], options: BusyOptions, tz: ZoneInfo
) -> list[tuple[datetime, datetime]] | None:
    """The busy intervals of one series, or None when it is too costly or cannot be read.

    A series gets a tenth of the time: one pathological event (a rule no date satisfies costs
    dateutil seconds) is left out, not the whole calendar; the calendar's own deadline still
    bounds the total."""
    try:
        if any(_too_costly(c, options) for c in components if "RECURRENCE-ID" not in c):
            return None
        with deadline(options.max_seconds * SERIES_SHARE) as series:
            expander = recurring_ical_events.Series(
                [recurring_ical_events.EventAdapter(c) for c in components]
            )
            # This series' own rules, made for this expansion alone, may be interrupted.
            series.interrupt(getattr(expander.recurrence, "rrules", ()))
            found = []
            for occurrence in expander.between(options.window_start, options.window_end):
                check_deadline()
                interval = _busy_interval(occurrence.as_component(False), options, tz)
                if interval is not None:
                    found.append(interval)
                    if len(found) > options.max_occurrences:
                        break  # the caller truncates; expanding further is only cost
        return found
    except DeadlinePassed as passed:
        if passed.outer:
            raise
        return None
    except Exception:  # a date or rule the expander cannot read: this series only
        return None


def _busy_interval(occurrence: Any, options: BusyOptions, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
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
        end_utc = _as_utc(start.dt + timedelta(days=1), tz) if start.dt < date.max else start_utc
    start_utc, end_utc = max(start_utc, options.window_start), min(end_utc, options.window_end)
    return (start_utc, end_utc) if start_utc < end_utc else None


def _is_busy(component: Any, treat_all_busy: bool) -> bool:
    if str(component.get("STATUS", "")).upper() == "CANCELLED":
        return False
    if treat_all_busy:
        return True
    if str(component.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return False
    status = str(component.get("X-MICROSOFT-CDO-BUSYSTATUS", "")).upper()
    return status != "FREE"
