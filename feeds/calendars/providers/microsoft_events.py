"""Microsoft Graph events (v1.0 `event` resources) <-> the iCalendar bodies calendar stores deal
in, and busy time from Graph events.

- An item of a Graph calendar is one event as `calendarView` gives it: a single event, or one
  occurrence or exception of a series (calendarView expands series into their instances, each
  with its own id and its own `iCalUId`; a moved occurrence is an `exception` at its new time).
  Series masters are not items: calsync's own writes are single events.
- Times are asked for in UTC (`Prefer: outlook.timezone="UTC"`) and come back as
  `{"dateTime": "2027-07-05T07:00:00.0000000", "timeZone": "UTC"}`. The event's own zone is
  `originalStartTimeZone`, a Windows zone name ("W. Europe Standard Time") or an IANA one; it is
  mapped to IANA with icalendar's CLDR table, and the body is written in that zone (TZID with
  its VTIMEZONE) — the same instant, shown as the organiser's wall time across DST.
- All-day events (`isAllDay`) start and end at midnight: they become dates (end exclusive).
- Our own events carry single-value extended properties (Graph's "extended properties
  overview"): our UID — Graph's iCalUId is Graph's own, not settable — the appointment, and
  whether the booking is cancelled (Graph has no "cancelled but still shown" for an event
  without attendees).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from calsync.feeds.ical.vtimezone import vtimezone
from calsync.feeds.sources.busy_time import BusyOptions, BusyResult, extract_busy

Event = dict[str, Any]

PRODID = "-//calsync//Microsoft Graph events 1.0//EN"
# Our property set (a GUID of calsync's own, fixed forever): "String {guid} Name <name>".
_PROPERTY_SET = "{6f6c8d0e-2b1a-4c52-9a8e-5d3b7c1f0a42}"
UID_PROPERTY = f"String {_PROPERTY_SET} Name calsyncUid"
APPOINTMENT_PROPERTY = f"String {_PROPERTY_SET} Name calsyncAppointment"
STATUS_PROPERTY = f"String {_PROPERTY_SET} Name calsyncStatus"
OUR_PROPERTIES = (UID_PROPERTY, APPOINTMENT_PROPERTY, STATUS_PROPERTY)
# $expand for reading them back with an event (delta rounds cannot expand; get can).
EXPAND_OURS = ("singleValueExtendedProperties($filter="
               + " or ".join(f"id eq '{p}'" for p in OUR_PROPERTIES) + ")")
FREE_SHOW_AS = {"free", "workingElsewhere"}  # never block (issue 12)


def event_etag(event: Event) -> str:
    """The version If-Match takes: Graph's @odata.etag (W/"<changeKey>")."""
    if event.get("@odata.etag"):
        return str(event["@odata.etag"])
    return f'W/"{event.get("changeKey", "")}"'


def ours(event: Event) -> dict[str, str]:
    found = event.get("singleValueExtendedProperties") or []
    return {str(p.get("id")): str(p.get("value", "")) for p in found if isinstance(p, dict)}


def iana_zone(name: str | None) -> tzinfo | None:
    """A Graph zone name (Windows or IANA) as a zone; None for UTC, custom or unknown zones."""
    if not name or name in ("UTC", "tzone://Microsoft/Utc"):
        return None
    key = WINDOWS_TO_OLSON.get(name, name)
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def graph_time(value: dict[str, Any], zone: tzinfo | None = None) -> datetime:
    """A dateTimeTimeZone answered in UTC (we asked for it), shown in `zone` if given."""
    text = str(value["dateTime"])
    if "." in text:  # Graph sends seven fractional digits; Python reads up to six
        head, _dot, fraction = text.partition(".")
        text = f"{head}.{fraction[:6]}"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        named = iana_zone(value.get("timeZone"))
        moment = moment.replace(tzinfo=named or UTC)
    return moment.astimezone(zone) if zone is not None else moment.astimezone(UTC)


def _span(ev: Event) -> tuple[date | datetime, date | datetime]:
    if ev.get("isAllDay"):
        return (date.fromisoformat(str(ev["start"]["dateTime"])[:10]),
                date.fromisoformat(str(ev["end"]["dateTime"])[:10]))
    zone = iana_zone(ev.get("originalStartTimeZone"))
    end_zone = iana_zone(ev.get("originalEndTimeZone")) or zone
    return graph_time(ev["start"], zone), graph_time(ev["end"], end_zone)


def _declined(ev: Event) -> bool:
    return (ev.get("responseStatus") or {}).get("response") == "declined"


def _vevent(ev: Event, *, declined_is_cancelled: bool) -> icalendar.Event:
    mine = ours(ev)
    out = icalendar.Event()
    out.add("uid", mine.get(UID_PROPERTY) or ev.get("iCalUId") or f"{ev['id']}@graph.microsoft.com")
    stamp = ev.get("lastModifiedDateTime")
    when = graph_time({"dateTime": str(stamp).rstrip("Z")}) if stamp else datetime.now(UTC)
    out.add("dtstamp", when.astimezone(UTC).replace(microsecond=0))
    start, end = _span(ev)
    out.add("dtstart", start)
    out.add("dtend", end)
    cancelled = bool(ev.get("isCancelled")) or mine.get(STATUS_PROPERTY) == "cancelled" \
        or (declined_is_cancelled and _declined(ev))
    tentative = ev.get("showAs") == "tentative"
    out.add("status", "CANCELLED" if cancelled else "TENTATIVE" if tentative else "CONFIRMED")
    # Declined by the mailbox's owner: free for busy time (as in graph_busy_blocks), the event
    # itself unchanged for two-way sync, which reads times and STATUS, not TRANSP.
    out.add("transp", "TRANSPARENT" if ev.get("showAs") in FREE_SHOW_AS or _declined(ev) else "OPAQUE")
    if ev.get("subject"):
        out.add("summary", str(ev["subject"]))
    body = ev.get("body") or {}
    description = body.get("content") if body.get("contentType") == "text" else ev.get("bodyPreview")
    if description:
        out.add("description", str(description))
    location = (ev.get("location") or {}).get("displayName")
    if location:
        out.add("location", str(location))
    if mine.get(APPOINTMENT_PROPERTY):
        out.add("x-calsync-appointment", mine[APPOINTMENT_PROPERTY])
    return out


def to_ical(events: Iterable[Event], *, declined_is_cancelled: bool = False) -> bytes:
    """Events as one VCALENDAR, with a VTIMEZONE for each zone they are shown in."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    components = [_vevent(ev, declined_is_cancelled=declined_is_cancelled) for ev in events]
    zones: set[str] = set()
    years: list[int] = []
    for comp in components:
        found: Any = comp
        for prop in ("DTSTART", "DTEND"):
            value = found[prop].dt
            years.append(value.year)
            zone = getattr(value, "tzinfo", None)
            if isinstance(zone, ZoneInfo) and zone.key != "UTC":
                zones.add(zone.key)
    text = cal.to_ical().decode("utf-8")
    body = ""
    if years:
        first_day, last_day = date(min(years) - 1, 1, 1), date(max(years) + 2, 1, 1)
        body = "".join(vtimezone(z, first_day, last_day) for z in sorted(zones))
    body += "".join(c.to_ical().decode("utf-8") for c in components)
    return text.replace("END:VCALENDAR\r\n", body + "END:VCALENDAR\r\n").encode("utf-8")


# --- iCalendar -> Graph -----------------------------------------------------------------------


class UnwritableBody(ValueError):
    """A body that cannot become a Graph event (no VEVENT, no UID, no DTSTART, a series)."""


def _graph_when(value: date | datetime) -> dict[str, str]:
    if not isinstance(value, datetime):
        return {"dateTime": f"{value.isoformat()}T00:00:00", "timeZone": "UTC"}
    if value.tzinfo is None:  # floating time (RFC 5545 §3.3.5): Graph has none; taken as UTC
        return {"dateTime": value.isoformat(), "timeZone": "UTC"}
    if isinstance(value.tzinfo, ZoneInfo) and value.tzinfo.key != "UTC":
        # Graph takes IANA names as well as Windows ones (dateTimeTimeZone.timeZone).
        return {"dateTime": value.replace(tzinfo=None).isoformat(), "timeZone": value.tzinfo.key}
    return {"dateTime": value.astimezone(UTC).replace(tzinfo=None).isoformat(), "timeZone": "UTC"}


def from_ical(body: bytes) -> Event:
    """The fields of a Graph event that we own, from the VEVENT of `body`."""
    try:
        cal = icalendar.Calendar.from_ical(body)
    except ValueError as exc:
        raise UnwritableBody("not an iCalendar body") from exc
    events = cal.walk("VEVENT")
    if not events or not events[0].get("UID") or events[0].get("DTSTART") is None:
        raise UnwritableBody("no event with a UID and a start")
    ev: Any = events[0]
    if len(events) > 1 or ev.get("RRULE") is not None or ev.get("RDATE") is not None:
        # Graph wants a patternedRecurrence, not RRULE text; bookings are single events.
        raise UnwritableBody("a recurring event")
    start = ev["DTSTART"].dt
    if ev.get("DTEND") is not None:
        end = ev["DTEND"].dt
    elif ev.get("DURATION") is not None:
        end = start + ev["DURATION"].dt
    else:  # RFC 5545 §3.6.1: a date lasts the day, a date-time no time at all
        end = start + timedelta(days=1) if not isinstance(start, datetime) else start
    status = str(ev.get("STATUS", "CONFIRMED")).upper()
    transparent = str(ev.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT"
    properties = [{"id": UID_PROPERTY, "value": str(ev["UID"])},
                  {"id": STATUS_PROPERTY, "value": "cancelled" if status == "CANCELLED" else "active"}]
    if ev.get("X-CALSYNC-APPOINTMENT"):
        properties.append({"id": APPOINTMENT_PROPERTY, "value": str(ev["X-CALSYNC-APPOINTMENT"])})
    return {
        "subject": str(ev.get("SUMMARY", "")),
        "body": {"contentType": "text", "content": str(ev.get("DESCRIPTION", ""))},
        "location": {"displayName": str(ev.get("LOCATION", ""))},
        "start": _graph_when(start),
        "end": _graph_when(end),
        "isAllDay": not isinstance(start, datetime),
        "showAs": "free" if transparent or status == "CANCELLED" else
                  "tentative" if status == "TENTATIVE" else "busy",
        "singleValueExtendedProperties": properties,
    }


def uid_of(event: Event) -> str:
    return str(next(p["value"] for p in event["singleValueExtendedProperties"] if p["id"] == UID_PROPERTY))


# --- busy time --------------------------------------------------------------------------------


def blocks(ev: Event) -> bool:
    """Whether a Graph event takes the time (before the all-day policy and the window)."""
    if "@removed" in ev or ev.get("type") == "seriesMaster":
        return False  # masters: calendarView already gave their instances
    if ev.get("isCancelled") or _declined(ev):
        return False
    return ev.get("showAs") not in FREE_SHOW_AS  # tentative, busy, oof (and unknown) block


def graph_busy_blocks(events: Iterable[Event], options: BusyOptions) -> BusyResult:
    """Busy time of Graph events (instances as calendarView gives them) in `options`' window,
    under the same rules and caps as any other calendar (busy_time.py): `showAs` free and
    workingElsewhere never block, tentative/busy/oof do; cancelled events and invitations the
    mailbox's owner declined are free; all-day events follow `options.all_day`."""
    taken = [ev for ev in events if blocks(ev)]
    if not taken:
        return BusyResult([], 0, 0, False)
    return extract_busy([icalendar.Calendar.from_ical(to_ical(taken))], options)
