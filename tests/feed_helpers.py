"""Helpers for feed tests: parse a feed two independent ways, and pick dates in the window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import icalendar
import vobject

from tests.clock import day_at

ALL_DAY = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def soon(days: int = 3, hour: int = 10, minute: int = 0) -> datetime:
    """A UTC instant `days` ahead at hour:minute, well inside the default feed window."""
    return day_at(days, hour, minute)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def events(body: bytes) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(body).walk("VEVENT"))


def events_by_uid(body: bytes) -> dict[str, icalendar.Event]:
    return {str(e["UID"]): e for e in events(body)}


def vobject_events(body: bytes) -> list[Any]:
    """The second, independent parser (vobject), as docs/protocol.md asks."""
    cal = vobject.readOne(body.decode("utf-8"))
    return list(getattr(cal, "vevent_list", []))


# Properties whose value type is TEXT (RFC 5545 §3.3.11, RFC 7986), where HTAB may stand.
TEXT_PROPERTIES = {b"SUMMARY", b"DESCRIPTION", b"LOCATION", b"COMMENT", b"NAME", b"CATEGORIES",
                   b"X-WR-CALNAME", b"X-WR-CALDESC", b"X-WR-TIMEZONE", b"X-CALSYNC-APPOINTMENT",
                   b"TZNAME", b"PRODID", b"UID"}


def control_characters(body: bytes) -> list[str]:
    """Where `body` holds a control character RFC 5545 §3.1 does not allow: anything below
    0x20 or DEL outside the CRLF line ends and the folds, and HTAB outside a TEXT value. Each
    finding names the (unfolded) line."""
    found = []
    if b"\r" in body.replace(b"\r\n", b"") or b"\n" in body.replace(b"\r\n", b""):
        found.append("a bare CR or LF")
    unfolded = body.replace(b"\r\n ", b"").replace(b"\r\n\t", b"")
    for line in unfolded.split(b"\r\n"):
        quoted, index = False, len(line)
        for at, byte in enumerate(line):  # the value starts at the first ':' outside quotes
            if byte == 0x22:
                quoted = not quoted
            elif byte == 0x3A and not quoted:
                index = at
                break
        head, value = line[:index], line[index + 1:]
        name = head.split(b";", 1)[0].upper()
        bad = [b for b in head if b < 0x20 or b == 0x7F]
        bad += [b for b in value if (b < 0x20 and not (b == 0x09 and name in TEXT_PROPERTIES)) or b == 0x7F]
        if bad:
            found.append(f"{bytes(sorted(set(bad)))!r} in {line[:80]!r}")
    return found
