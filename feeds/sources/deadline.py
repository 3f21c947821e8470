"""A time limit for expanding recurrences, that also reaches inside dateutil's rule iteration.

`with deadline(seconds) as d:` sets a limit for this thread (each sync runs in one worker
thread); `check_deadline()` raises DeadlinePassed once it is over. Limits nest: the inner one is
never later than the outer one, and `DeadlinePassed.outer` says whether the outer one is over
too (a series out of time is left out; a calendar out of time fails).

dateutil compares UNTIL and COUNT only with dates that match a rule, so a rule that no date
matches (BYMONTH=2;BYMONTHDAY=30, or BYSETPOS past the end of the set) iterates to the year 9999
without yielding, and it has no API to bound that. Its iterator rebuilds its per-month tables
(`dateutil.rrule._iterinfo.rebuild`) at least once for every month it walks through, at every
frequency: the check is made there, at no cost to ordinary rules.

Only rules handed to `d.interrupt(rules)` are interrupted there, and, under a deadline that
called `interrupt_zones()`, every other rule (a time zone's) once that deadline is over. A rule
that caches its dates (dateutil's tzical makes zone rules so) holds a lock while it computes
them and never releases it when interrupted: that is only safe for a rule nothing will use
again. A calendar's zones live exactly as long as the calendar (feeds.sources.time_zones keeps
them out of icalendar's process-wide cache), so a zone rule is interrupted only by the
calendar's own deadline, which fails the whole calendar; a series' shorter deadline never
stops a zone another series of the same calendar still needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dateutil import rrule as dateutil_rrule

_local = threading.local()
_install_lock = threading.Lock()


class DeadlinePassed(BaseException):
    """A BaseException, so no library's `except Exception` swallows it on its way out."""

    def __init__(self, outer: bool) -> None:
        super().__init__("the deadline has passed")
        self.outer = outer  # the enclosing deadline has passed as well


class Deadline:
    def __init__(self, at: float, outer: Deadline | None) -> None:
        self.at: float = at if outer is None else min(at, outer.at)
        self.outer = outer
        self.interruptible: set[int] = set()
        # The deadline that may stop any rule (see interrupt_zones), inherited by inner ones.
        self.zones: Deadline | None = outer.zones if outer is not None else None

    def interrupt_zones(self) -> None:
        """Let this deadline stop any rule iterated under it, time zones' included, and fail
        with `outer` set (the reader gives up on the whole calendar)."""
        self.zones = self

    def interrupt(self, rules: Iterable[Any]) -> None:
        """Let the deadline stop these dateutil rules mid-iteration."""
        self.interruptible = {id(rule) for rule in rules}

    def passed(self, now: float) -> bool:
        return now > self.at


def check_deadline() -> None:
    current: Deadline | None = getattr(_local, "current", None)
    if current is not None:
        now = time.monotonic()
        if current.passed(now):
            raise DeadlinePassed(current.outer is not None and current.outer.passed(now))


def _install_iteration_check() -> None:
    with _install_lock:
        base = getattr(dateutil_rrule, "_iterinfo", None)
        if base is None or getattr(base, "checks_deadline", False):
            return

        class _CheckedIterInfo(base):  # type: ignore[misc,valid-type]
            checks_deadline = True

            def rebuild(self, year: int, month: int) -> None:
                current: Deadline | None = getattr(_local, "current", None)
                if current is not None:
                    if id(self.rrule) in current.interruptible:
                        check_deadline()
                    elif current.zones is not None and current.zones.passed(time.monotonic()):
                        raise DeadlinePassed(outer=True)
                super().rebuild(year, month)

        dateutil_rrule._iterinfo = _CheckedIterInfo


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    _install_iteration_check()
    outer: Deadline | None = getattr(_local, "current", None)
    mine = Deadline(time.monotonic() + seconds, outer)
    _local.current = mine
    try:
        yield mine
    finally:
        _local.current = outer
