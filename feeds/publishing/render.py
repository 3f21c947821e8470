"""Render one appointment as a feed's VEVENT, and the VCALENDAR header around a feed.

What a privacy level shows is decided here; the VEVENT itself is feeds/ical/vevent.py's, the same
builder pushes and iTIP use. We call it once per changed appointment only: the result is
cached as a fragment, which is what makes feeds fast (see feed.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, vDuration

from calsync.feeds.ical.vevent import build_vevent, one_line
from calsync.feeds.ical.vtimezone import vtimezone
from calsync.models import STATUS_CANCELLED, Appointment

PRODID = "-//calsync//calsync feeds 1.0//EN"
# Bump when the shape of rendered events changes: every cached fragment becomes stale. It is
# part of every feed's ETag too, which is why 2 (the RRULE VTIMEZONEs of issue 13, events
# unchanged) bumped it: subscribers must not keep the old zones through 304 answers. 3: cancelled
# events TRANSPARENT and titled as cancelled, user text cleaned of control characters.
FRAGMENT_FORMAT = 3


@dataclass(frozen=True)
class Variant:
    """What a fragment depends on besides the appointment: privacy level and scope kind."""

    privacy: str  # full | limited | busy
    names_staff: bool  # group and company feeds say whose appointment it is

    @property
    def key(self) -> str:
        return f"{self.privacy}{'+staff' if self.names_staff else ''}"


def _summary(appt: Appointment, variant: Variant) -> str:
    cancelled = appt.status == STATUS_CANCELLED
    if variant.privacy == "busy":
        text = "Cancelled" if cancelled else "Busy"
    else:
        text = appt.service if variant.privacy == "limited" else f"{appt.service} – {appt.customer.name}"
        # Clients that ignore STATUS (several do for subscribed calendars) still read the title.
        text = f"Cancelled: {text}" if cancelled else text
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
    cancelled = appt.status == STATUS_CANCELLED
    # A cancelled appointment kept in the feed (show_cancelled) is TRANSPARENT: a client that
    # ignores STATUS:CANCELLED must not show the staff member busy (RFC 5545 §3.8.2.7).
    return build_vevent(
        appt, summary=_summary(appt, variant), description=_description(appt, variant),
        privacy=variant.privacy, times_in=ZoneInfo(appt.staff.timezone),
        cancelled=cancelled, transparent=cancelled,
    ).to_ical().decode("utf-8")


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
    name = one_line(name)  # an admin-typed staff, group or company name: never a second line
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
    zones = "".join(vtimezone(tz, first, last) for tz in zoned)
    return text[: -len("END:VCALENDAR\r\n")] + zones


FOOTER = "END:VCALENDAR\r\n"
UTC_NAMES = {"UTC", "Etc/UTC", "Etc/GMT", "GMT", "Zulu", "Etc/Zulu", "Etc/Universal", "Universal"}
