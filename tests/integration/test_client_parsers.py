"""Issue 13: the feed's VTIMEZONEs resolve every booking to the same instant in the parsers that
clients use: Mozilla's ical.js (Thunderbird), vobject, `ical` (Home Assistant) and icalendar.

Each parser reads the times through the VTIMEZONE the feed carries, not through its own copy of
the tz database: icalendar and `ical` would otherwise look a known TZID up in zoneinfo and
prove nothing, so for them the test builds the zone from the feed's VTIMEZONE explicitly.
One feed per zone holds all the appointments (10:00 local on the 1st and 15th of every month
for two years, and the minutes around every change of offset), parsed once per parser.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject
from ical.calendar_stream import IcsCalendarStream
from ical.timezone import IcsTimezoneInfo

from calsync.feeds.ical.vtimezone import vtimezone
from calsync.feeds.mail.itip import Organizer, build_itip
from calsync.feeds.publishing.render import FOOTER, Variant, render_event, render_header
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, iso, soon

JS = Path(__file__).resolve().parents[1] / "js"
# The zones of the demo (feeds/demo.py) and the awkward ones of the issue: 30-minute DST,
# no DST, DST abolished (2019), negative DST in tzdata.
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata",
         "America/Sao_Paulo", "Europe/Dublin")
VARIANTS = [Variant(p, names_staff=s) for p in ("full", "limited", "busy") for s in (False, True)]
TODAY = date.today()
WINDOW = (datetime.combine(TODAY, datetime.min.time(), UTC) - timedelta(days=30),
          datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(days=2 * 366 + 30))


# --- ical.js through Node ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def icaljs() -> Path:
    """tests/js with ical.js installed (npm ci from its lock file when node_modules is missing).
    Without Node the ical.js half is skipped locally and fails on CI, where it is required."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js and npm are required on CI to read feeds with ical.js (issue 13)")
        pytest.skip("Node.js/npm not installed: the ical.js (Thunderbird) reading is not checked")
    if not (JS / "node_modules" / "ical.js" / "package.json").exists():
        subprocess.run([npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=300)
    return JS


def read_with_icaljs(js: Path, files: list[Path]) -> dict[str, dict[str, datetime]]:
    proc = subprocess.run(["node", str(js / "read_feed.mjs"), *map(str, files)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return {path: {uid: datetime.fromisoformat(v.replace("Z", "+00:00")) for uid, v in starts.items()}
            for path, starts in json.loads(proc.stdout).items()}


# --- the Python parsers, each through the feed's own VTIMEZONE ---------------------------------


def read_with_icalendar(body: bytes) -> dict[str, datetime]:
    cal = icalendar.Calendar.from_ical(body)
    zones = {str(tz["TZID"]): tz.to_tz(lookup_tzid=False) for tz in cal.walk("VTIMEZONE")}
    starts = {}
    for event in cal.walk("VEVENT"):
        start = event.decoded("DTSTART")
        tzid = event["DTSTART"].params.get("TZID")
        if tzid is not None:  # the wall time, read through the feed's VTIMEZONE
            start = zones[tzid].localize(start.replace(tzinfo=None)) if hasattr(
                zones[tzid], "localize") else start.replace(tzinfo=zones[tzid])
        starts[str(event["UID"])] = start.astimezone(UTC)
    return starts


def read_with_vobject(body: bytes) -> dict[str, datetime]:
    # vobject builds a tzinfo from each VTIMEZONE it reads and uses it for the TZID.
    cal = vobject.readOne(body.decode("utf-8"))
    return {ev.uid.value: ev.dtstart.value.astimezone(UTC) for ev in cal.vevent_list}


def read_with_ical(body: bytes) -> dict[str, datetime]:
    cal = IcsCalendarStream.calendar_from_ics(body.decode("utf-8"))
    zones = {tz.tz_id: IcsTimezoneInfo.from_timezone(tz) for tz in cal.timezones}
    raw = {str(e["UID"]): e for e in icalendar.Calendar.from_ical(body).walk("VEVENT")}
    starts = {}
    for event in cal.events:
        start = event.dtstart
        assert isinstance(start, datetime)
        tzid = raw[event.uid]["DTSTART"].params.get("TZID")
        if tzid is not None:
            start = start.replace(tzinfo=zones[tzid])  # `ical` evaluates the VTIMEZONE itself
        starts[str(event.uid)] = start.astimezone(UTC)
    return starts


PARSERS: dict[str, Callable[[bytes], dict[str, datetime]]] = {
    "icalendar": read_with_icalendar, "vobject": read_with_vobject, "ical": read_with_ical,
}


# --- the feeds --------------------------------------------------------------------------------


@dataclass
class Appt:
    """An appointment as render_event reads it."""

    uid: str
    start_at: datetime
    end_at: datetime
    staff: Any
    sequence: int = 0
    created_at: datetime = datetime(2025, 1, 1, tzinfo=UTC)
    updated_at: datetime = datetime(2025, 1, 2, tzinfo=UTC)
    location: str | None = "Room 1"
    notes: str | None = "Note"
    status: str = "confirmed"
    service: str = "Cut"
    id: int = 1
    customer: Any = field(default_factory=lambda: SimpleNamespace(
        name="Ann Lee", email="ann@example.com", phone=None))


def changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The UTC instants where the zone's offset changes, found independently of the code under
    test: hour by hour, then minute by minute."""
    found = []
    moment = start
    while moment < end:
        if (moment + timedelta(hours=1)).astimezone(zone).utcoffset() != moment.astimezone(zone).utcoffset():
            minute = moment
            while minute.astimezone(zone).utcoffset() == moment.astimezone(zone).utcoffset():
                minute += timedelta(minutes=1)
            found.append(minute)
        moment += timedelta(hours=1)
    return found


def instants(tzid: str) -> dict[str, datetime]:
    """What one zone's feed holds: uid -> UTC start."""
    zone = ZoneInfo(tzid)
    wanted: dict[str, datetime] = {}
    for month in range(24):
        year, month0 = TODAY.year + (TODAY.month - 1 + month) // 12, (TODAY.month - 1 + month) % 12
        for day in (1, 15):
            local = datetime(year, month0 + 1, day, 10, 0, tzinfo=zone)
            wanted[f"d{local:%Y%m%d}"] = local.astimezone(UTC)
    for change in changes(zone, WINDOW[0], WINDOW[1]):
        for minutes in (-61, -1, 0, 1, 61):
            wanted[f"t{change:%Y%m%dT%H%M}{minutes:+d}"] = change + timedelta(minutes=minutes)
    return wanted


@dataclass
class Feed:
    tzid: str
    wanted: dict[str, datetime]
    body: bytes


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Feed]:
    folder = tmp_path_factory.mktemp("feeds")
    out = {}
    for tzid in ZONES:
        staff = SimpleNamespace(name="Zoë", timezone=tzid)
        wanted = instants(tzid)
        header = render_header(name=tzid, timezone=tzid, timezones=[tzid], refresh=timedelta(hours=1),
                               color=None, window=WINDOW)
        # Every privacy level in turn: they all write the times the same way.
        events = [render_event(Appt(uid, start, start + timedelta(minutes=30), staff), VARIANTS[i % 6])
                  for i, (uid, start) in enumerate(wanted.items())]
        body = (header + "".join(events) + FOOTER).encode("utf-8")
        path = folder / f"{tzid.replace('/', '_')}.ics"
        path.write_bytes(body)
        out[path] = Feed(tzid, wanted, body)
    return out


def test_the_feeds_hold_what_the_acceptance_asks(feeds: dict[Path, Feed]) -> None:
    for feed in feeds.values():
        assert sum(uid.startswith("d") for uid in feed.wanted) == 48
        # Sao Paulo and Kolkata have no change left; the others two a year.
        expected = 0 if feed.tzid in ("Asia/Kolkata", "America/Sao_Paulo") else 5 * 4
        assert sum(uid.startswith("t") for uid in feed.wanted) >= expected
        assert f"TZID:{feed.tzid}\r\n".encode() in feed.body
        assert b"TZID=" in feed.body
        # One value a line: a comma-separated RDATE list is what parsers read only partly.
        assert not [line for line in feed.body.split(b"\r\n") if line.startswith(b"RDATE") and b"," in line]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_python_parsers_read_every_instant_through_the_vtimezone(
    feeds: dict[Path, Feed], parser: str
) -> None:
    wrong = {}
    for feed in feeds.values():
        got = PARSERS[parser](feed.body)
        assert set(got) == set(feed.wanted)
        wrong.update({f"{feed.tzid} {uid}": (str(got[uid]), str(at))
                      for uid, at in feed.wanted.items() if got[uid] != at})
    assert not wrong, f"{parser} reads {len(wrong)} starts differently: {dict(list(wrong.items())[:8])}"


def test_icaljs_reads_every_instant_as_thunderbird_does(feeds: dict[Path, Feed], icaljs: Path) -> None:
    read = read_with_icaljs(icaljs, list(feeds))
    wrong = {}
    for path, feed in feeds.items():
        got = read[str(path)]
        assert set(got) == set(feed.wanted)
        wrong.update({f"{feed.tzid} {uid}": (str(got[uid]), str(at))
                      for uid, at in feed.wanted.items() if got[uid] != at})
    assert not wrong, f"ical.js reads {len(wrong)} starts differently: {dict(list(wrong.items())[:8])}"


def test_icaljs_reading_is_not_vacuous(tmp_path: Path, icaljs: Path) -> None:
    """icalendar's own VTIMEZONE (one DTSTART and an RDATE list, spring DTSTART in the new
    offset) is what the issue saw read an hour off: the reader must notice it."""
    zone = ZoneInfo("Europe/Berlin")
    local = datetime(TODAY.year + 1, 4, 15, 10, tzinfo=zone)
    cal = icalendar.Calendar()
    cal.add("prodid", "-//test//EN")
    cal.add("version", "2.0")
    cal.add_component(icalendar.Timezone.from_tzid("Europe/Berlin", first_date=date(TODAY.year - 1, 1, 1),
                                                   last_date=date(TODAY.year + 3, 1, 1)))
    event = icalendar.Event()
    event.add("uid", "x")
    event.add("dtstamp", datetime(2025, 1, 1, tzinfo=UTC))
    event.add("dtstart", local)
    cal.add_component(event)
    path = tmp_path / "old.ics"
    path.write_bytes(cal.to_ical())
    assert read_with_icaljs(icaljs, [path])[str(path)]["x"] != local.astimezone(UTC)


# --- through the API: every privacy level of a real feed ---------------------------------------


def test_a_served_feed_reads_alike_in_every_parser_and_privacy_level(api: Api, icaljs: Path,
                                                                     tmp_path: Path) -> None:
    staff = api.make_staff(timezone="America/New_York", working_hours=ALL_DAY)
    booked = {}
    for days in (3, 40, 100, 200, 300):
        resp = api.book(staff["id"], iso(soon(days)), iso(soon(days, 11)))
        assert resp.status_code == 201, resp.get_json()
        booked[resp.get_json()["uid"]] = soon(days)
    for privacy in ("full", "limited", "busy"):
        body = api.client.get(api.feed_url("staff", staff["id"], privacy)).data
        assert b"TZID=America/New_York" in body
        path = tmp_path / f"{privacy}.ics"
        path.write_bytes(body)
        readings = {name: read(body) for name, read in PARSERS.items()}
        readings["ical.js"] = read_with_icaljs(icaljs, [path])[str(path)]
        for name, got in readings.items():
            assert got == booked, f"{name} ({privacy})"


# --- iTIP carries UTC only (copies in staff calendars are local: test_client_reads_copies.py) ---


def test_itip_writes_utc_and_needs_no_vtimezone() -> None:
    start = datetime(TODAY.year + 1, 3, 29, 0, 30, tzinfo=UTC)
    staff = SimpleNamespace(name="Zoë", timezone="Europe/Berlin")
    appt = Appt("p1", start, start + timedelta(hours=1), staff)
    itip = build_itip(appt, "REQUEST", Organizer("Salon", "salon@example.com"), "Booking", "Text")
    for body in (itip,):
        assert b"TZID" not in body and b"VTIMEZONE" not in body
        assert f"DTSTART:{start:%Y%m%dT%H%M%S}Z".encode() in body
        for read in PARSERS.values():
            assert read(body) == {"p1": start}


def test_a_wall_time_that_occurs_twice_is_written_in_utc() -> None:
    """RFC 5545 §3.3.5 says such a time is the first occurrence, ical.js takes the second:
    both occurrences of the repeated hour are written in UTC, the hours around them locally."""
    zone = ZoneInfo("Europe/Berlin")
    fall = next(c for c in changes(zone, WINDOW[0], WINDOW[1]) if c.month >= 9)
    staff = SimpleNamespace(name="Zoë", timezone="Europe/Berlin")
    for minutes, utc in ((-61, False), (-55, True), (5, True), (61, False)):
        start = fall + timedelta(minutes=minutes)
        body = render_event(Appt("x", start, start + timedelta(minutes=30), staff), Variant("full", False))
        line = f"DTSTART:{start:%Y%m%dT%H%M%S}Z" if utc else "DTSTART;TZID=Europe/Berlin:"
        assert line in body, (minutes, body)


def test_vtimezone_generation_is_cached_and_quick() -> None:
    import time

    first, last = date(TODAY.year - 1, 1, 1), date(TODAY.year + 4, 1, 1)
    vtimezone.cache_clear()
    started = time.perf_counter()
    for tzid in ZONES:
        vtimezone(tzid, first, last)
    assert time.perf_counter() - started < 2.0  # a few ms a zone; generous for a loaded CI
    assert vtimezone.cache_info().misses == len(ZONES)
    vtimezone("Europe/Berlin", first, last)
    assert vtimezone.cache_info().hits == 1

