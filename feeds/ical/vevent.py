"""The one VEVENT of an appointment, wherever it goes: a published feed, the copy written into a
staff calendar, an iTIP message to the customer.

What differs between those is a parameter (the privacy level, the time zone the times are
written in, whether CREATED/LAST-MODIFIED are carried, STATUS and the iTIP method, ORGANIZER
and ATTENDEE); the rest is the same code. icalendar does the escaping (RFC 5545 §3.3.11: no
CR/LF from user input reaches a property line), parameter quoting (RFC 6868) and octet-based
folding (§3.1), and writes properties in its canonical order, so the bytes do not depend on the
order they are added in here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from icalendar import Event, vCalAddress, vText

PRIVACY_LEVELS = ("full", "limited", "busy")
METHODS = ("REQUEST", "CANCEL")


# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]+")
_CONTROLS_BUT_TAB_LF = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _valid_unicode(value: str) -> str:
    """Lone surrogates (JSON's "\\ud800" decodes to one) cannot be written as UTF-8: each becomes
    U+FFFD instead of failing the whole feed; a proper pair becomes the character it encodes."""
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def text_value(value: str) -> str:
    """What an admin or customer typed, as a multi-line TEXT value (DESCRIPTION, LOCATION).

    RFC 5545 §3.1 allows no control character in a content line but HTAB; a line break inside
    a value is the escape \\n (§3.3.11). So CRLF and a bare CR become LF (which icalendar
    escapes), HTAB stays, and every other control character (NUL, ESC, DEL, C1) is dropped.
    """
    if value.isprintable():  # the common case: nothing to do (also false for surrogates)
        return value
    value = _valid_unicode(value).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS_BUT_TAB_LF.sub("", value)


def one_line(value: str) -> str:
    """A name or title (SUMMARY, a CN parameter, the calendar's NAME): on one line, every
    run of control characters (CRLF, TAB, NUL, ...) a space, so a name typed with a line break
    shows as the words it holds, never as a second line."""
    if value.isprintable():
        return value
    return _CONTROLS.sub(" ", _valid_unicode(value))


class Scheduled(Protocol):
    """What the builder reads of an appointment (models.Appointment has it all)."""

    # Read-only members: a frozen snapshot (feeds/mail/drafts.py) is one too.
    @property
    def uid(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def start_at(self) -> datetime: ...
    @property
    def end_at(self) -> datetime: ...
    @property
    def location(self) -> str | None: ...


@dataclass(frozen=True)
class Party:
    """An ORGANIZER or ATTENDEE: a mailto: address (RFC 6047 §2.3), its CN, and the other
    parameters the message needs (ROLE, PARTSTAT, SCHEDULE-AGENT, ...), in any order."""

    address: str
    name: str
    params: tuple[tuple[str, str], ...] = ()

    def to_value(self) -> vCalAddress:
        value = vCalAddress(f"mailto:{self.address}")
        value.params["CN"] = vText(one_line(self.name))
        for key, param in self.params:
            value.params[key] = param
        return value


def _in_zone(moment: datetime, zone: tzinfo) -> datetime:
    local = moment.astimezone(zone)
    # A wall time that occurs twice (the hour before a fall-back change, repeated after it)
    # means its first occurrence (RFC 5545 §3.3.5), so the second can only be written in UTC;
    # ical.js (Thunderbird) reads such a time as the second, so the first is written in UTC too.
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        return moment.astimezone(UTC)
    return local


def build_vevent(
    appt: Scheduled,
    *,
    summary: str,
    description: str | None,
    privacy: str = "full",
    times_in: tzinfo = UTC,
    history: bool = True,
    cancelled: bool = False,
    method: str | None = None,
    transparent: bool = False,
    organizer: Party | None = None,
    attendee: Party | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Event:
    """The appointment as a VEVENT.

    privacy: full carries everything; limited drops LOCATION; busy drops DESCRIPTION and
      LOCATION and marks the event CLASS:PRIVATE. (What SUMMARY and DESCRIPTION say is the
      caller's: each audience is told different things.)
    times_in: the zone DTSTART/DTEND are written in: the staff member's for feeds (with a
      TZID and a VTIMEZONE in the calendar; UTC for an instant whose wall time occurs twice), UTC
      elsewhere (a Z, no VTIMEZONE: RFC 5545 §3.3.5).
    history: carry CREATED and LAST-MODIFIED.
    cancelled / method: STATUS:CANCELLED when cancelled, and always for an iTIP CANCEL
      (RFC 5546 §3.2.5); otherwise CONFIRMED.
    transparent: TRANSP:TRANSPARENT; bookings are OPAQUE so they block time in free/busy views,
      a cancelled one kept in a calendar is TRANSPARENT so it blocks nothing.
    extra: further (name, text) properties, e.g. X-CALSYNC-APPOINTMENT.
    Text is cleaned here, whoever typed it: SUMMARY and names on one line, DESCRIPTION,
    LOCATION and `extra` free of control characters but HTAB and line breaks (one_line,
    text_value).
    """
    if privacy not in PRIVACY_LEVELS:
        raise ValueError(f"unknown privacy level {privacy!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"unsupported iTIP method {method!r}")
    event = Event()
    event.add("uid", appt.uid)
    # DTSTAMP comes from the last change, never the moment of rendering: the same data gives
    # the same bytes (feed ETags, docs/protocol.md), and with a METHOD it is when the iTIP message
    # was created (RFC 5545 §3.8.7.2), so a retried email is the same message.
    event.add("dtstamp", appt.updated_at.astimezone(UTC))
    if history:
        event.add("created", appt.created_at.astimezone(UTC))
        event.add("last-modified", appt.updated_at.astimezone(UTC))
    # Calendar apps keep the copy with the highest SEQUENCE (RFC 5546 §2.1.4).
    event.add("sequence", appt.sequence)
    event.add("dtstart", _in_zone(appt.start_at, times_in))
    event.add("dtend", _in_zone(appt.end_at, times_in))
    event.add("summary", one_line(summary))
    if description and privacy != "busy":
        event.add("description", text_value(description))
    if appt.location and privacy == "full":
        event.add("location", text_value(appt.location))
    if privacy == "busy":
        event.add("class", "PRIVATE")
    event.add("transp", "TRANSPARENT" if transparent else "OPAQUE")
    event.add("status", "CANCELLED" if cancelled or method == "CANCEL" else "CONFIRMED")
    if organizer is not None:
        event.add("organizer", organizer.to_value())
    if attendee is not None:
        event.add("attendee", attendee.to_value())
    for name, text in extra:
        event.add(name, text_value(text))
    return event
