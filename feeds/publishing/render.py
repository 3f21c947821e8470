"""Render one appointment as a VEVENT, and the VCALENDAR header around a feed.

icalendar does the escaping (RFC 5545 §3.3.11: no CR/LF from user input reaches a property
line) and octet-based folding (§3.1). We call it once per changed appointment only: the result
is cached as a fragment, which is what makes feeds fast (see publish.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, vDuration

from calsync.models import STATUS_CANCELLED, Appointment

PRODID = "-//calsync//calsync feeds 1.0//EN"
# Bump when the shape of rendered events changes: every cached fragment becomes stale.
FRAGMENT_FORMAT = 1


@dataclass(frozen=True)
class Variant:
    """What a fragment depends on besides the appointment: privacy level and scope kind."""

    privacy: str  # full | limited | busy
    names_staff: bool  # group and company feeds say whose appointment it is

    @property
    def key(self) -> str:
        return f"{self.privacy}{'+staff' if self.names_staff else ''}"


def _summary(appt: Appointment, variant: Variant) -> str:
    if variant.privacy == "busy":
        text = "Busy"
    elif variant.privacy == "limited":
        text = appt.service
    else:
        text = f"{appt.service} – {appt.customer.name}"
    return f"{text} ({appt.staff.name})" if variant.names_staff else text


def _description(appt: Appointment, variant: Variant) -> str | None:
    if variant.privacy == "busy":
        return None
    lines = [f"Service: {appt.service}", f"Staff: {appt.staff.name}"]
    if variant.privacy == "full":
        customer = appt.customer
        lines.append(f"Customer: {customer.name}")
        if customer.email:
            lines.append(f"Email: {customer.email}")
        if customer.phone:
            lines.append(f"Phone: {customer.phone}")
        if appt.notes:
            lines.append(f"Notes: {appt.notes}")
    return "\n".join(lines)


def render_event(appt: Appointment, variant: Variant) -> str:
    tz = ZoneInfo(appt.staff.timezone)
    event = Event()
    event.add("uid", appt.uid)
    # DTSTAMP comes from the last change, never the request time: the same data must give the
    # same bytes and so the same ETag (PROTOCOL.md).
    event.add("dtstamp", appt.updated_at)
    event.add("created", appt.created_at)
    event.add("last-modified", appt.updated_at)
    event.add("sequence", appt.sequence)
    event.add("dtstart", appt.start_at.astimezone(tz))
    event.add("dtend", appt.end_at.astimezone(tz))
    event.add("summary", _summary(appt, variant))
    description = _description(appt, variant)
    if description:
        event.add("description", description)
    if variant.privacy == "full" and appt.location:
        event.add("location", appt.location)
    if variant.privacy == "busy":
        event.add("class", "PRIVATE")
    # Bookings block time in the subscriber's free/busy view.
    event.add("transp", "OPAQUE")
    event.add("status", "CANCELLED" if appt.status == STATUS_CANCELLED else "CONFIRMED")
    return event.to_ical().decode("utf-8")


@lru_cache(maxsize=256)
def _vtimezone(tzid: str, first: date, last: date) -> str:
    return Timezone.from_tzid(tzid, first_date=first, last_date=last).to_ical().decode("utf-8")


def render_header(
    *,
    name: str,
    timezone: str,
    timezones: list[str],
    refresh: timedelta,
    color: str | None,
    window: tuple[datetime, datetime],
) -> str:
    """The calendar's opening lines up to and including its VTIMEZONEs; the caller appends
    the VEVENT fragments and END:VCALENDAR."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("name", name)  # RFC 7986 §5.1
    cal.add("x-wr-calname", name)  # Apple, Google and Outlook read this one
    # Google and Outlook show floating and TZID times in this zone when they ignore VTIMEZONE.
    cal.add("x-wr-timezone", timezone)
    cal.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})  # RFC 7986 §5.7
    cal.add("x-published-ttl", vDuration(refresh))  # Outlook's older spelling of the same hint
    if color:
        cal.add("color", color)  # RFC 7986 §5.9
    text = cal.to_ical().decode("utf-8")
    assert text.endswith("END:VCALENDAR\r\n")
    # VTIMEZONE rules cover the window with a year of margin either side: clients read
    # recurrence-free events only inside it, and the margin keeps DST edges exact.
    first = (window[0] - timedelta(days=366)).date()
    last = (window[1] + timedelta(days=366)).date()
    # UTC times are written with a Z and need no VTIMEZONE (RFC 5545 §3.3.5).
    zoned = sorted((set(timezones) | {timezone}) - UTC_NAMES)
    zones = "".join(_vtimezone(tz, first, last) for tz in zoned)
    return text[: -len("END:VCALENDAR\r\n")] + zones


FOOTER = "END:VCALENDAR\r\n"
UTC_NAMES = {"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu", "Etc/Universal", "Universal"}
