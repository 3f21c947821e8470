"""The day tests count from: today (UTC) as the test started, not as each call is made.

Tests place appointments and calendar events at "2 days ahead, 10:00". Read from the clock at
each call, a test that runs across midnight UTC books on one date and moves or checks on the
next (a CI run at 00:0x UTC did: the appointment moved to 13:00 came back on the day before).
An autouse fixture (tests/conftest.py) sets the day as each test starts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

_day: date | None = None


def start_day() -> None:
    global _day
    _day = datetime.now(UTC).date()


def day_at(days: int, hour: int, minute: int = 0) -> datetime:
    """A UTC instant `days` after the test's day, at hour:minute."""
    day = _day or datetime.now(UTC).date()
    return datetime.combine(day + timedelta(days=days), time(hour, minute), tzinfo=UTC)
