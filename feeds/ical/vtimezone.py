"""VTIMEZONE components from the tz database, in the shape every client reads alike (issue 13).

icalendar's Timezone.from_tzid writes one DTSTART plus a comma-separated RDATE list per
observance, with the spring DTSTART in the local time of the offset being entered. ical.js
(Thunderbird) and vobject read such blocks only partly and showed bookings an hour early. So we
write them the way the tz database's own iCalendar exports do (vzic, tzurl): one observance per
era of a rule, with an RRULE (FREQ=YEARLY;BYMONTH;BYDAY) that runs until the era's last change,
and a plain DTSTART for a one-off change. Every DTSTART is the local time of the offset the
change leaves (RFC 5545 §3.6.5: "DTSTART ... MUST be specified as a date with local time
value", read with TZOFFSETFROM), e.g. 02:00 for Europe/Berlin's spring change, and every
UNTIL is in UTC (§3.3.10). A one-off change carries a single RDATE equal to its DTSTART
(never a comma-separated list, which several parsers read only partly).

The changes come from zoneinfo, the same data the feed's times are converted with, so clients
and server cannot disagree about an instant. zoneinfo has no public list of transitions: we
step through the range and bisect each change to the second. Results are cached per (zone,
range); one zone over five years takes a few milliseconds.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Timezone, TimezoneDaylight, TimezoneStandard

# No zone changes its offset and back within one day (Morocco's Ramadan suspensions, the
# shortest in tzdata, last weeks); a day's step finds every change with two thousand
# utcoffset() calls for a five-year range.
STEP = timedelta(days=1)
# How far past the range we look to tell a rule that is still in force (RRULE without UNTIL,
# as vzic writes the current rules) from one that ended inside the range.
LOOKAHEAD = timedelta(days=400)
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@dataclass(frozen=True)
class Change:
    """One transition: the UTC instant, the offsets it leaves and enters, the entered name."""

    at: datetime
    offset_from: timedelta
    offset_to: timedelta
    name: str
    daylight: bool

    @property
    def local(self) -> datetime:
        """The wall-clock time of the change in the offset it leaves (naive)."""
        return (self.at + self.offset_from).replace(tzinfo=None)

    @property
    def kind(self) -> tuple[bool, timedelta, timedelta, str, int, time]:
        """Changes of one kind may share an observance: same offsets and name, same month,
        same local time of day."""
        local = self.local
        return (self.daylight, self.offset_from, self.offset_to, self.name, local.month, local.time())


def _state(zone: ZoneInfo, at: datetime) -> tuple[timedelta, timedelta, str]:
    local = at.astimezone(zone)
    return local.utcoffset() or timedelta(), local.dst() or timedelta(), local.tzname() or ""


def _first_change(zone: ZoneInfo, low: datetime, high: datetime, before: tuple) -> datetime:
    """Bisect to the second: the first instant after `low` whose state is not `before`."""
    while high - low > timedelta(seconds=1):
        mid = (low + (high - low) / 2).replace(microsecond=0)
        if mid <= low:
            break
        if _state(zone, mid) == before:
            low = mid
        else:
            high = mid
    return high


def _changes(zone: ZoneInfo, start: datetime, end: datetime) -> tuple[list[Change], tuple]:
    """The transitions in [start, end) and the state in force at start."""
    first = before = _state(zone, start)
    found: list[tuple[datetime, tuple, tuple]] = []
    moment = start
    while moment < end:
        step_end = moment + STEP
        if _state(zone, step_end) == before:
            moment = step_end
            continue
        # Carry on from the change itself, so two changes inside one step are both found.
        moment = _first_change(zone, moment, step_end, before)
        after = _state(zone, moment)
        found.append((moment, before, after))
        before = after
    # tzdata's Europe/Dublin (and Morocco since 2018) has negative DST: the winter (Ramadan)
    # offset is the "DST". Clients and vzic's rearguard output call the higher offset around
    # it DAYLIGHT, so a period without DST next to a negative one is daylight too.
    states = [first] + [new for _, _, new in found]

    def daylight(i: int) -> bool:
        dst = states[i][1]
        neighbours = states[max(0, i - 1): i + 2]
        return dst > timedelta() or (dst == timedelta() and any(s[1] < timedelta() for s in neighbours))

    changes = [Change(at, old[0], new[0], new[2], daylight(i + 1))
               for i, (at, old, new) in enumerate(found)]
    return changes, (first[0], first[2], daylight(0))


def _rules(change: Change) -> set[tuple]:
    """The yearly rules that put a change on its day: the n-th or last weekday of the month
    (vzic's BYDAY=2SU / -1SU), a weekday on or after a day (Sun>=D), or a fixed day."""
    local = change.local
    weekday, day = local.weekday(), local.day
    days_in_month = calendar.monthrange(local.year, local.month)[1]
    found: set[tuple] = {("day", day)}
    shortest = 28 if local.month == 2 else calendar.monthrange(2001, local.month)[1]
    for first_day in range(max(1, day - 6), day + 1):
        if first_day + 6 <= shortest:  # the seven days stay inside the month every year
            found.add(("on_or_after", weekday, first_day))
    if day > days_in_month - 7:
        found.add(("last", weekday))
    return found


def _preferred(rules: set[tuple]) -> tuple:
    """The most widely understood spelling of a rule that fits: BYDAY with an ordinal first."""
    def rank(rule: tuple) -> tuple[int, tuple]:
        if rule[0] == "on_or_after" and rule[2] in (1, 8, 15, 22):
            return (0, rule)
        return ({"last": 1, "day": 2, "on_or_after": 3}[rule[0]], rule)
    return min(rules, key=rank)


def _recur(rule: tuple, month: int) -> dict:
    recur: dict = {"FREQ": "YEARLY", "BYMONTH": month}
    if rule[0] == "last":
        recur["BYDAY"] = f"-1{WEEKDAYS[rule[1]]}"
    elif rule[0] == "day":
        recur["BYMONTHDAY"] = rule[1]
    elif rule[2] in (1, 8, 15, 22):
        recur["BYDAY"] = f"{(rule[2] - 1) // 7 + 1}{WEEKDAYS[rule[1]]}"
    else:  # "Sun>=D" as vzic writes it: the weekday among seven days from D
        recur["BYMONTHDAY"] = list(range(rule[2], rule[2] + 7))
        recur["BYDAY"] = WEEKDAYS[rule[1]]
    return recur


@dataclass
class _Era:
    changes: list[Change]
    rules: set[tuple]


def _eras(changes: list[Change]) -> list[_Era]:
    """Runs of changes of one kind in consecutive years that one yearly rule describes."""
    eras: list[_Era] = []
    open_by_kind: dict[tuple, _Era] = {}
    for change in changes:
        era = open_by_kind.get(change.kind)
        rules = _rules(change)
        if (era is not None and change.local.year == era.changes[-1].local.year + 1
                and era.rules & rules):
            era.changes.append(change)
            era.rules &= rules
        else:
            era = _Era([change], rules)
            eras.append(era)
            open_by_kind[change.kind] = era
    return eras


def _observance(daylight: bool, name: str, offset_from: timedelta, offset_to: timedelta,
                start: datetime) -> TimezoneStandard | TimezoneDaylight:
    part = TimezoneDaylight() if daylight else TimezoneStandard()
    part.add("tzname", name)
    part.add("tzoffsetfrom", offset_from)
    part.add("tzoffsetto", offset_to)
    part.add("dtstart", start)
    return part


def _once(part: TimezoneStandard | TimezoneDaylight) -> TimezoneStandard | TimezoneDaylight:
    """A one-off observance also names its onset in an RDATE of its own (one value, one line),
    as vzic writes them: `ical` (allenporter) takes onsets from RRULE and RDATE only and would
    skip an observance that has just a DTSTART."""
    part.add("rdate", part.decoded("dtstart"))
    return part


@lru_cache(maxsize=256)
def vtimezone(tzid: str, first: date, last: date) -> str:
    """The VTIMEZONE of an IANA zone, exact for every instant from `first` to `last`."""
    zone = ZoneInfo(tzid)
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last, time(), UTC)
    changes, (offset, name, daylight) = _changes(zone, start, end + LOOKAHEAD)
    component = Timezone()
    component.add("tzid", tzid)
    # What is in force when the range begins, as an observance of its own (vzic starts with
    # the zone's first offset in the same way).
    opening = (start + offset).replace(tzinfo=None)
    component.add_component(_once(_observance(daylight, name, offset, offset, opening)))
    for era in _eras(changes):
        head = era.changes[0]
        if head.at >= end:
            continue  # begins after the range: no event of the feed needs it
        part = _observance(head.daylight, head.name, head.offset_from, head.offset_to, head.local)
        if len(era.changes) > 1:
            recur = _recur(_preferred(era.rules), head.local.month)
            tail = era.changes[-1]
            if tail.at < end:  # the rule ended inside the range: stop it at its last change
                # UNTIL is UTC (RFC 5545 §3.3.10), but icalendar and vobject compare it with the
                # local DTSTART as if both were wall times. The later of the two readings of the
                # last change includes it for both, and the next one is a year away.
                recur["UNTIL"] = tail.at + max(tail.offset_from, timedelta())
            part.add("rrule", recur)
        else:
            _once(part)
        component.add_component(part)
    return component.to_ical().decode("utf-8")
