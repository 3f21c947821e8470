"""The time zones an external calendar defines stay with that calendar (issue 14).

icalendar turns each VTIMEZONE it parses into a tzinfo (dateutil's tzical) and keeps it in
one process-wide cache keyed by TZID (`icalendar.timezone.tzp`), which it also consults for
every TZID it meets afterwards. For calendars from outside that is two faults:

- memory: every new TZID stays for the life of the process, with every transition its rules
  were ever expanded to (RSS grew 139 → 283 MB over five syncs of one hostile calendar);
- wrong times: Outlook names every custom zone "Customized Time Zone", so the first
  calendar's definition was used for every later calendar that defined it differently.

icalendar has no switch for this, so the cache is made per thread (`_ZonesPerThread`, put in
the place of tzp's dict) and emptied before and after each calendar is parsed: a calendar's
zones are only reachable from its own parsed components, and go away with them. Zones of the
tz database (ZoneInfo) are cheap to look up again.

Because no zone outlives its calendar, a zone's rules may be interrupted by the calendar's
deadline like any recurrence (feeds.sources.deadline, `interrupt_zones`): a rule interrupted
mid-expansion keeps dateutil's cache lock, but nothing will ever use that rule again.
"""

from __future__ import annotations

import threading
from typing import Any

import icalendar
from icalendar.timezone import tzp

_install_lock = threading.Lock()
# Where icalendar.timezone.tzp.TZP keeps its zones (a name-mangled private attribute: pinned by
# tests/unit/test_busy_time.py, which fails if an icalendar release moves it).
CACHE_ATTRIBUTE = "_TZP__tz_cache"


class _ZonesPerThread(dict):  # type: ignore[type-arg]
    """The mapping TZP reads and writes (get, [], in), with one dict per thread behind it."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def _mine(self) -> dict[str, Any]:
        zones: dict[str, Any] | None = getattr(self._local, "zones", None)
        if zones is None:
            zones = self._local.zones = {}
        return zones

    def get(self, key: Any, default: Any = None) -> Any:
        return self._mine().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self._mine()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._mine()[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._mine()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._mine()

    def __len__(self) -> int:
        return len(self._mine())

    def __iter__(self) -> Any:
        return iter(list(self._mine()))

    def clear(self) -> None:
        self._mine().clear()


def _zones() -> _ZonesPerThread:
    """The per-thread cache, put in place on first use (and again if something reset tzp)."""
    current = getattr(tzp, CACHE_ATTRIBUTE, None)
    if isinstance(current, _ZonesPerThread):
        return current
    with _install_lock:
        current = getattr(tzp, CACHE_ATTRIBUTE, None)
        if isinstance(current, _ZonesPerThread):
            return current
        if not isinstance(current, dict):
            raise RuntimeError(f"icalendar's zone cache is no longer tzp.{CACHE_ATTRIBUTE}; "
                               "see feeds/sources/time_zones.py")
        zones = _ZonesPerThread()
        setattr(tzp, CACHE_ATTRIBUTE, zones)
        return zones


def zones_known_to_this_thread() -> int:
    return len(_zones())


def parse_with_own_zones(body: bytes, *, multiple: bool = True) -> Any:
    """icalendar's parse, with this calendar's VTIMEZONEs visible to it alone."""
    zones = _zones()
    zones.clear()  # nothing another calendar defined may stand in for this one's zones
    try:
        if multiple:
            return icalendar.Calendar.from_ical(body, multiple=True)
        return icalendar.Calendar.from_ical(body)
    finally:
        zones.clear()
