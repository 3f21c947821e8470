"""Issue 13's two-year, multi-zone table over what calsync writes besides feeds: the copies
written into staff calendars (local times in the staff member's zone, with its VTIMEZONE) and
the iTIP emails to customers (UTC). Every instant resolves alike in icalendar, vobject, `ical`
and ical.js (the feeds themselves, every privacy level, are test_client_parsers.py's)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from calsync.feeds.calendars.push import render_copy
from calsync.feeds.mail.itip import Organizer, build_itip
from tests.integration.test_client_parsers import PARSERS, ZONES, Appt, instants, read_with_icaljs

ORGANIZER = Organizer("Salon", "salon@example.com")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, tuple[str, str, object]]:
    """One file per copy and per iTIP message: path -> (kind, uid, UTC start)."""
    folder = tmp_path_factory.mktemp("written")
    out: dict[Path, tuple[str, str, object]] = {}
    for tzid in ZONES:
        staff = SimpleNamespace(name="Zoë", timezone=tzid)
        for uid, start in instants(tzid).items():
            appt = Appt(uid, start, start + timedelta(minutes=30), staff)
            for kind, body in (("copy", render_copy(appt).encode()),
                               ("itip", build_itip(appt, "REQUEST", ORGANIZER, "Booking", "Text"))):
                path = folder / f"{kind}-{tzid.replace('/', '_')}-{uid}.ics"
                path.write_bytes(body)
                out[path] = (kind, uid, start)
    return out


def test_copies_are_local_with_a_vtimezone_and_itip_is_utc(written: dict) -> None:
    kinds = {kind for kind, _, _ in written.values()}
    assert kinds == {"copy", "itip"}
    local = 0
    for path, (kind, _uid, _start) in written.items():
        body = path.read_bytes()
        if kind == "itip":
            assert b"TZID" not in body
        elif b"DTSTART;TZID=" in body:
            local += 1
            assert b"BEGIN:VTIMEZONE" in body
    # Only the wall times that occur twice (and the UTC-free zones' none) are written in UTC.
    assert local > len(written) / 2 * 0.9


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_python_parsers_read_every_copy_and_itip_instant_alike(written: dict, parser: str) -> None:
    wrong = {}
    for path, (kind, uid, start) in written.items():
        got = PARSERS[parser](path.read_bytes())
        if got != {uid: start}:
            wrong[path.name] = (str(got), str(start), kind)
    assert not wrong, f"{parser} reads {len(wrong)} differently: {dict(list(wrong.items())[:6])}"


def test_icaljs_reads_every_copy_and_itip_instant_alike(written: dict, icaljs: Path) -> None:
    read = read_with_icaljs(icaljs, list(written))
    wrong = {path.name: (str(read[str(path)]), str(start))
             for path, (_kind, uid, start) in written.items() if read[str(path)] != {uid: start}}
    assert not wrong, f"ical.js reads {len(wrong)} differently: {dict(list(wrong.items())[:6])}"
