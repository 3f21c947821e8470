"""The shape of the generated VTIMEZONEs (feeds/ical/vtimezone.py, issue 13): RRULE
observances per era, DTSTART in the local time of the offset left, UNTIL in UTC, one-off
changes with a single RDATE. tests/integration/test_client_parsers.py reads them with four
parsers; this checks the lines themselves."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest

from calsync.feeds.ical.vtimezone import vtimezone


def parse(tzid: str, first: date, last: date) -> icalendar.Calendar:
    head = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
    return icalendar.Calendar.from_ical(head + vtimezone(tzid, first, last) + "END:VCALENDAR\r\n")


def observances(tzid: str, first: date, last: date) -> list[icalendar.Component]:
    (zone,) = parse(tzid, first, last).walk("VTIMEZONE")
    assert zone["TZID"] == tzid
    return list(zone.subcomponents)


def lines(text: str) -> list[str]:
    return text.split("\r\n")


def test_berlin_is_two_rules_starting_at_the_local_time_they_leave() -> None:
    text = vtimezone("Europe/Berlin", date(2025, 1, 1), date(2028, 1, 1))
    parts = text.split("BEGIN:")[2:]
    opening, spring, autumn = parts
    assert "TZOFFSETFROM:+0100" in opening and "TZOFFSETTO:+0100" in opening
    # 01:00 UTC is 02:00 in the +0100 the spring change leaves (RFC 5545 §3.6.5).
    assert "DAYLIGHT" in spring and "DTSTART:20250330T020000" in lines(spring)
    assert "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3" in lines(spring)
    assert "DTSTART:20251026T030000" in lines(autumn)
    assert "RRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10" in lines(autumn)
    assert "UNTIL" not in text  # the rules are still in force after the range, as vzic writes


def test_an_ended_rule_stops_at_its_last_change_in_utc_and_one_offs_have_one_rdate() -> None:
    parts = observances("America/Sao_Paulo", date(2016, 1, 1), date(2021, 1, 1))
    (february,) = [p for p in parts if "RRULE" in p and p["RRULE"]["BYMONTH"] == [2]]
    # DST in Brazil ended on 2019-02-17 at 00:00 -02 (02:00 UTC), for good.
    # UNTIL is the later reading of that change: its UTC instant (negative offsets).
    assert february["RRULE"]["UNTIL"] == [datetime(2019, 2, 17, 2, tzinfo=UTC)]
    assert february.decoded("DTSTART") == datetime(2016, 2, 21, 0, 0)  # local time in -02
    assert all("UNTIL" in p["RRULE"] for p in parts if "RRULE" in p)
    for part in parts:
        if "RRULE" not in part:
            assert part.decoded("RDATE").dts[0].dt == part.decoded("DTSTART")


def test_no_rdate_line_holds_a_list() -> None:
    for tzid in ("America/Sao_Paulo", "Europe/Berlin", "Africa/Casablanca", "Asia/Jerusalem"):
        text = vtimezone(tzid, date(2010, 1, 1), date(2030, 1, 1))
        assert not [line for line in lines(text) if line.startswith("RDATE") and "," in line]


def test_no_dst_is_a_single_standard_observance() -> None:
    (only,) = observances("Asia/Kolkata", date(2025, 1, 1), date(2028, 1, 1))
    assert only.name == "STANDARD" and only["TZNAME"] == "IST"


def test_negative_dst_still_calls_the_summer_offset_daylight() -> None:
    parts = observances("Europe/Dublin", date(2025, 1, 1), date(2028, 1, 1))
    assert {(p.name, p["TZNAME"]) for p in parts} == {("STANDARD", "GMT"), ("DAYLIGHT", "IST")}


@pytest.mark.parametrize("tzid", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                                  "Asia/Jerusalem", "Africa/Casablanca", "Pacific/Apia"])
def test_icalendar_reads_twenty_years_like_zoneinfo(tzid: str) -> None:
    """Morocco's Ramadan suspensions, Israel's Friday rule and Samoa's abolished DST too
    (from 2012: icalendar cannot represent Samoa's 24-hour jump over the date line in 2011)."""
    first, last = date(2012, 1, 1), date(2030, 1, 1)
    ours = parse(tzid, first, last).walk("VTIMEZONE")[0].to_tz(lookup_tzid=False)
    zone = ZoneInfo(tzid)
    moment = datetime(2012, 1, 2, tzinfo=UTC)
    wrong = []
    while moment < datetime(2029, 12, 30, tzinfo=UTC):
        expected = moment.astimezone(zone).utcoffset()
        if moment.astimezone(ours).utcoffset() != expected:
            wrong.append(moment)
        moment += timedelta(hours=13)  # coprime with 24: every hour of the day comes up
    assert not wrong, f"{len(wrong)} instants off, first {wrong[:3]}"
