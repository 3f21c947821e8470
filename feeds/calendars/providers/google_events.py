"""Google Calendar events (API v3 Event resources) <-> the iCalendar bodies calendar stores
deal in, and busy time from Google events.

- An item of a Google calendar is one series: the event and, for a recurring one, its
  modified or cancelled occurrences, which Google lists as events of their own (with
  `recurringEventId` and `originalStartTime`) when `singleEvents=false`. They become one
  VCALENDAR: the master VEVENT, an EXDATE for each cancelled occurrence and an override VEVENT
  (RECURRENCE-ID, RFC 5545 §3.8.4.4) for each modified one — what a CalDAV server would hold.
- Times: `date` is an all-day date (end exclusive, as DTEND); `dateTime` with `timeZone` is
  a wall time in that IANA zone (written with TZID and its VTIMEZONE, so recurrences expand
  across DST in the event's own zone); `dateTime` alone is an instant (written in UTC).
- Google has no "cancelled but still shown": status cancelled means deleted. A copy of a
  cancelled booking that we keep visible is sent as confirmed + transparent, with
  extendedProperties.private.calsyncStatus = cancelled, and read back as STATUS:CANCELLED.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar

from calsync.feeds.ical.vtimezone import vtimezone
from calsync.feeds.sources.busy_time import BusyOptions, BusyResult, extract_busy

Event = dict[str, Any]

APPOINTMENT_KEY = "calsyncAppointment"
STATUS_KEY = "calsyncStatus"
PRODID = "-//calsync//Google Calendar events 1.0//EN"
_RECURRENCE_LINE = re.compile(r"^(RRULE|RDATE|EXDATE)[;:]", re.I)


def event_id_for(uid: str) -> str:
    """Our event id for a UID: the same UID always gives the same id, so a retried insert is
    answered 409 instead of creating a second event. Google allows 5-1024 characters of
    base32hex (a-v, 0-9; events.insert `id`); 20 bytes of SHA-256 are 32 of them."""
    digest = hashlib.sha256(uid.encode("utf-8")).digest()[:20]
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


def series_key(event: Event) -> str:
    return str(event.get("recurringEventId") or event["id"])


def is_master(event: Event) -> bool:
    return not event.get("recurringEventId")


def series_etag(events: Iterable[Event], key: str) -> str:
    """The version of a series: the master's etag (which If-Match takes) when it has no
    modified occurrences, else the master's etag and a digest of theirs after a ';' (Google
    etags are quoted numbers and never contain one)."""
    master = ""
    others: list[str] = []
    for ev in events:
        if ev["id"] == key and is_master(ev):
            master = str(ev.get("etag", ""))
        else:
            others.append(str(ev.get("etag", "")))
    if not others:
        return master
    return master + ";" + hashlib.sha256("\n".join(sorted(others)).encode()).hexdigest()[:16]


def master_etag(etag: str | None) -> str | None:
    if not etag:
        return None
    return etag.split(";", 1)[0] or None


# --- Google -> iCalendar ----------------------------------------------------------------------


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None  # a zone Google knows and this machine does not: keep the instant in UTC


def google_time(value: dict[str, Any], default_zone: str | None = None) -> date | datetime:
    if value.get("date"):
        return date.fromisoformat(str(value["date"]))
    moment = datetime.fromisoformat(str(value["dateTime"]))
    zone = _zone(value.get("timeZone") or default_zone)
    if moment.tzinfo is None:  # requests may name the zone instead of an offset
        moment = moment.replace(tzinfo=zone or UTC)
    return moment.astimezone(zone) if zone is not None else moment.astimezone(UTC)


def _self_declined(event: Event) -> bool:
    return any(a.get("self") and a.get("responseStatus") == "declined" for a in event.get("attendees") or [])


def to_ical(events: list[Event], key: str, *, declined_is_cancelled: bool = False) -> bytes:
    """One series as a VCALENDAR (see the module's docstring)."""
    master = next((e for e in events if e["id"] == key and is_master(e)), None)
    zone_name = ((master or {}).get("start") or {}).get("timeZone")
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    components: list[icalendar.Event] = []
    exdates: list[date | datetime] = []
    for ev in events:
        if ev is master:
            continue
        gone = ev.get("status") == "cancelled" or (declined_is_cancelled and _self_declined(ev))
        if gone and ev.get("originalStartTime"):
            exdates.append(google_time(ev["originalStartTime"], zone_name))
        elif not gone:
            components.append(_vevent(ev, zone_name))
    if master is not None:
        first = _vevent(master, zone_name)
        for line in master.get("recurrence") or []:
            if _RECURRENCE_LINE.match(line):  # Google keeps them as RFC 5545 content lines
                parsed = icalendar.Event.from_ical(f"BEGIN:VEVENT\r\n{line}\r\nEND:VEVENT\r\n")
                for prop_name, prop in parsed.property_items()[1:-1]:
                    first.add(prop_name, prop, encode=False)
        for when in exdates:
            first.add("exdate", when)
        components.insert(0, first)
    zones: set[str] = set()
    years: list[int] = []
    for comp in components:
        found: Any = comp
        for prop in ("DTSTART", "DTEND", "RECURRENCE-ID"):
            if prop in found:
                value = found[prop].dt
                years.append(value.year)
                zone = getattr(value, "tzinfo", None)
                if isinstance(zone, ZoneInfo) and zone.key != "UTC":
                    zones.add(zone.key)
    text = cal.to_ical().decode("utf-8")
    if years:
        first_day, last_day = date(min(years) - 1, 1, 1), date(max(years) + 2, 1, 1)
        body = "".join(vtimezone(z, first_day, last_day) for z in sorted(zones))
    else:
        body = ""
    body += "".join(c.to_ical().decode("utf-8") for c in components)
    return text.replace("END:VCALENDAR\r\n", body + "END:VCALENDAR\r\n").encode("utf-8")


def _vevent(ev: Event, zone_name: str | None) -> icalendar.Event:
    out = icalendar.Event()
    out.add("uid", ev.get("iCalUID") or f"{ev['id']}@google.com")
    stamp = ev.get("updated")
    out.add("dtstamp", datetime.fromisoformat(stamp).astimezone(UTC) if stamp else datetime.now(UTC))
    if ev.get("originalStartTime"):
        out.add("recurrence-id", google_time(ev["originalStartTime"], zone_name))
    if ev.get("start"):
        out.add("dtstart", google_time(ev["start"]))
    if ev.get("end"):
        out.add("dtend", google_time(ev["end"]))
    private = (ev.get("extendedProperties") or {}).get("private") or {}
    status = "CANCELLED" if private.get(STATUS_KEY) == "cancelled" else \
        {"tentative": "TENTATIVE", "cancelled": "CANCELLED"}.get(str(ev.get("status")), "CONFIRMED")
    out.add("status", status)
    # An invitation the calendar's owner declined does not block (Google keeps it in their
    # calendar): shown as free, so busy time read from the store's bodies skips it too, while
    # two-way sync (which reads times and STATUS, not TRANSP) sees the event as it is.
    free = ev.get("transparency") == "transparent" or _self_declined(ev)
    out.add("transp", "TRANSPARENT" if free else "OPAQUE")
    out.add("sequence", int(ev.get("sequence") or 0))
    for field, prop in (("summary", "summary"), ("description", "description"), ("location", "location")):
        if ev.get(field):
            out.add(prop, str(ev[field]))
    if private.get(APPOINTMENT_KEY):
        out.add("x-calsync-appointment", str(private[APPOINTMENT_KEY]))
    return out


# --- iCalendar -> Google ----------------------------------------------------------------------


class UnwritableBody(ValueError):
    """A body that cannot become a Google event (no VEVENT, no UID, no DTSTART)."""


def _google_when(value: date | datetime) -> dict[str, str]:
    if not isinstance(value, datetime):
        return {"date": value.isoformat()}
    if value.tzinfo is None:  # floating time (RFC 5545 §3.3.5): Google has none; taken as UTC
        return {"dateTime": value.isoformat(), "timeZone": "UTC"}
    if isinstance(value.tzinfo, ZoneInfo) and value.tzinfo.key != "UTC":
        return {"dateTime": value.isoformat(), "timeZone": value.tzinfo.key}
    if value.utcoffset() == timedelta(0):
        return {"dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return {"dateTime": value.isoformat()}  # a zone of the body's own VTIMEZONE: the instant


def from_ical(body: bytes) -> Event:
    """The fields of an Event resource that we own, from the master VEVENT of `body`."""
    try:
        cal = icalendar.Calendar.from_ical(body)
    except ValueError as exc:
        raise UnwritableBody("not an iCalendar body") from exc
    masters = [e for e in cal.walk("VEVENT") if e.get("RECURRENCE-ID") is None]
    if not masters or not masters[0].get("UID") or masters[0].get("DTSTART") is None:
        raise UnwritableBody("no event with a UID and a start")
    ev: Any = masters[0]
    start = ev["DTSTART"].dt
    if ev.get("DTEND") is not None:
        end = ev["DTEND"].dt
    elif ev.get("DURATION") is not None:
        end = start + ev["DURATION"].dt
    else:  # RFC 5545 §3.6.1: a date lasts the day, a date-time no time at all
        end = start + timedelta(days=1) if not isinstance(start, datetime) else start
    status = str(ev.get("STATUS", "CONFIRMED")).upper()
    transparent = str(ev.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT"
    private = {STATUS_KEY: "cancelled" if status == "CANCELLED" else "active"}
    if ev.get("X-CALSYNC-APPOINTMENT"):
        private[APPOINTMENT_KEY] = str(ev["X-CALSYNC-APPOINTMENT"])
    unfolded = ev.to_ical().decode("utf-8").replace("\r\n ", "").split("\r\n")
    out: Event = {
        "iCalUID": str(ev["UID"]),
        "start": _google_when(start),
        "end": _google_when(end),
        "summary": str(ev.get("SUMMARY", "")),
        "description": str(ev.get("DESCRIPTION", "")),
        "location": str(ev.get("LOCATION", "")),
        "status": "tentative" if status == "TENTATIVE" else "confirmed",
        "transparency": "transparent" if transparent else "opaque",
        "sequence": int(ev.get("SEQUENCE", 0)),
        "extendedProperties": {"private": private},
    }
    recurrence = [line for line in unfolded if _RECURRENCE_LINE.match(line)]
    if recurrence:
        out["recurrence"] = recurrence
    return out


# --- busy time --------------------------------------------------------------------------------


def google_busy_blocks(events: Iterable[Event], options: BusyOptions) -> BusyResult:
    """Busy time of Google events (as events.list gives them with singleEvents=false) in
    `options`' window, under the same rules and caps as any other calendar (busy_time.py):
    transparent and cancelled events are free, and so is an invitation the calendar's owner
    declined (attendees[].self with responseStatus declined) — Google keeps those in the
    calendar. Series are expanded in their own zone, across DST."""
    series: dict[str, list[Event]] = {}
    for ev in events:
        series.setdefault(series_key(ev), []).append(ev)
    parts: list[bytes] = []
    for key, members in series.items():
        master = next((e for e in members if e["id"] == key and is_master(e)), None)
        if master is not None and (master.get("status") == "cancelled" or _self_declined(master)):
            continue
        parts.append(to_ical(members, key, declined_is_cancelled=True))
    if not parts:
        return BusyResult([], 0, 0, False)
    # One calendar per series: each carries its own VTIMEZONEs (ours, from zoneinfo), and
    # extract_busy expands series calendar by calendar under its caps and deadline.
    return extract_busy([icalendar.Calendar.from_ical(p) for p in parts], options)
