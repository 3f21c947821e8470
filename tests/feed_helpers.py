"""Helpers for feed tests: parse a feed two independent ways, and pick dates in the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import vobject

ALL_DAY = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def soon(days: int = 3, hour: int = 10, minute: int = 0) -> datetime:
    """A UTC instant `days` ahead at hour:minute, well inside the default feed window."""
    base = datetime.now(UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return base + timedelta(days=days)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def events(body: bytes) -> list[icalendar.Event]:
    return list(icalendar.Calendar.from_ical(body).walk("VEVENT"))


def events_by_uid(body: bytes) -> dict[str, icalendar.Event]:
    return {str(e["UID"]): e for e in events(body)}


def vobject_events(body: bytes) -> list[Any]:
    """The second, independent parser (vobject), as PROTOCOL.md asks."""
    cal = vobject.readOne(body.decode("utf-8"))
    return list(getattr(cal, "vevent_list", []))
