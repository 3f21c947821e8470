"""Busy-time extraction: docs/protocol.md's busy rules, recurrences with exceptions, time zones,
all-day policy, caps — and every real-world file in the shared corpus."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calsync.feeds.sources.busy_time import BusyOptions, CalendarDataError, extract_busy
from tests.conftest import CORPUS

# Timed within a second or two: a collection of the heap earlier tests left must not pause the
# threads mid-test (tests/conftest.py, no_gc_pauses).
pytestmark = pytest.mark.usefixtures("no_gc_pauses")


WINDOW = BusyOptions(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC),
                     timezone="Europe/Berlin")


def cal(*events: str, extra: str = "") -> bytes:
    body = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n" + extra
    for i, ev in enumerate(events):
        body += f"BEGIN:VEVENT\r\nUID:e{i}@test\r\nDTSTAMP:20291201T000000Z\r\n{ev.strip()}\r\nEND:VEVENT\r\n"
    return (body + "END:VCALENDAR\r\n").replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_opaque_is_busy_and_transparent_cancelled_and_free_are_not() -> None:
    body = cal(
        "DTSTART:20300107T090000Z\nDTEND:20300107T100000Z",
        "DTSTART:20300107T110000Z\nDTEND:20300107T120000Z\nTRANSP:TRANSPARENT",
        "DTSTART:20300107T130000Z\nDTEND:20300107T140000Z\nSTATUS:CANCELLED",
        "DTSTART:20300107T150000Z\nDTEND:20300107T160000Z\nX-MICROSOFT-CDO-BUSYSTATUS:FREE",
        "DTSTART:20300107T170000Z\nDTEND:20300107T180000Z\nX-MICROSOFT-CDO-BUSYSTATUS:OOF",
    )
    assert extract_busy(body, WINDOW).intervals == [
        (utc(2030, 1, 7, 9), utc(2030, 1, 7, 10)), (utc(2030, 1, 7, 17), utc(2030, 1, 7, 18)),
    ]


def test_treat_every_event_as_busy_still_skips_cancelled() -> None:
    body = cal("DTSTART:20300107T110000Z\nDTEND:20300107T120000Z\nTRANSP:TRANSPARENT",
               "DTSTART:20300107T130000Z\nDTEND:20300107T140000Z\nSTATUS:CANCELLED")
    options = BusyOptions(WINDOW.window_start, WINDOW.window_end, treat_all_busy=True)
    assert extract_busy(body, options).intervals == [(utc(2030, 1, 7, 11), utc(2030, 1, 7, 12))]


def test_recurrence_with_exdate_and_moved_override() -> None:
    body = cal(
        "DTSTART;TZID=Europe/Berlin:20300107T090000\nDTEND;TZID=Europe/Berlin:20300107T100000\n"
        "RRULE:FREQ=WEEKLY;COUNT=4\nEXDATE;TZID=Europe/Berlin:20300114T090000",
        "RECURRENCE-ID;TZID=Europe/Berlin:20300121T090000\n"
        "DTSTART;TZID=Europe/Berlin:20300121T150000\nDTEND;TZID=Europe/Berlin:20300121T160000",
    ).replace(b"UID:e1@test", b"UID:e0@test")
    assert extract_busy(body, WINDOW).intervals == [
        (utc(2030, 1, 7, 8), utc(2030, 1, 7, 9)),
        (utc(2030, 1, 21, 14), utc(2030, 1, 21, 15)),  # moved to 15:00 Berlin
        (utc(2030, 1, 28, 8), utc(2030, 1, 28, 9)),
    ]


def test_daylight_saving_keeps_wall_clock_time() -> None:
    body = cal("DTSTART;TZID=Europe/Berlin:20300325T090000\nDTEND;TZID=Europe/Berlin:20300325T100000\n"
               "RRULE:FREQ=WEEKLY;COUNT=2")
    options = BusyOptions(utc(2030, 3, 20), utc(2030, 4, 10), timezone="Europe/Berlin")
    assert extract_busy(body, options).intervals == [
        (utc(2030, 3, 25, 8), utc(2030, 3, 25, 9)),  # CET, UTC+1
        (utc(2030, 4, 1, 7), utc(2030, 4, 1, 8)),  # CEST, UTC+2
    ]


def test_all_day_events_follow_the_policy_in_the_staff_zone() -> None:
    body = cal("DTSTART;VALUE=DATE:20300110\nDTEND;VALUE=DATE:20300111")
    busy = extract_busy(body, WINDOW).intervals
    assert busy == [(utc(2030, 1, 9, 23), utc(2030, 1, 10, 23))]  # Berlin midnight to midnight
    ignore = BusyOptions(WINDOW.window_start, WINDOW.window_end, timezone="Europe/Berlin", all_day="ignore")
    assert extract_busy(body, ignore).intervals == []


def test_floating_times_are_the_staff_members_wall_clock() -> None:
    body = cal("DTSTART:20300107T090000\nDTEND:20300107T100000")
    assert extract_busy(body, WINDOW).intervals == [(utc(2030, 1, 7, 8), utc(2030, 1, 7, 9))]


def test_google_x_wr_timezone_calendars_are_repaired() -> None:
    """Google exports recurring events in UTC plus X-WR-TIMEZONE; the series must follow the
    calendar's zone across DST, not stay fixed in UTC."""
    body = cal("DTSTART:20300318T080000Z\nDTEND:20300318T090000Z\nRRULE:FREQ=WEEKLY;COUNT=3",
               extra="X-WR-TIMEZONE:Europe/Berlin\r\n")
    options = BusyOptions(utc(2030, 3, 10), utc(2030, 4, 10), timezone="UTC")
    starts = [a for a, _ in extract_busy(body, options).intervals]
    assert starts == [utc(2030, 3, 18, 8), utc(2030, 3, 25, 8), utc(2030, 4, 1, 7)]


def test_windows_time_zone_names_are_understood() -> None:
    body = cal("DTSTART;TZID=W. Europe Standard Time:20300107T090000\n"
               "DTEND;TZID=W. Europe Standard Time:20300107T100000")
    assert extract_busy(body, WINDOW).intervals == [(utc(2030, 1, 7, 8), utc(2030, 1, 7, 9))]


def test_only_the_window_is_kept_and_clipped() -> None:
    body = cal("DTSTART:20291231T230000Z\nDTEND:20300101T010000Z",
               "DTSTART:20300401T090000Z\nDTEND:20300401T100000Z")
    assert extract_busy(body, WINDOW).intervals == [(utc(2030, 1, 1), utc(2030, 1, 1, 1))]


@pytest.mark.parametrize("rule", ["FREQ=SECONDLY;COUNT=1000000000", "FREQ=MINUTELY",
                                  "FREQ=HOURLY;BYMINUTE=0,5,10,15,20,25,30,35,40,45,50,55",
                                  "FREQ=DAILY;INTERVAL=1;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11,12,13"])
def test_pathological_recurrences_cost_bounded_time(rule: str) -> None:
    body = cal(f"DTSTART:19900101T000000Z\nDTEND:19900101T000001Z\nRRULE:{rule}",
               "DTSTART:20300107T090000Z\nDTEND:20300107T100000Z")
    started = time.monotonic()
    result = extract_busy(body, WINDOW)
    assert time.monotonic() - started < 2
    assert (utc(2030, 1, 7, 9), utc(2030, 1, 7, 10)) in result.intervals


def test_occurrence_cap_truncates_the_total() -> None:
    body = cal(*[f"DTSTART:203001{d:02d}T090000Z\nDTEND:203001{d:02d}T100000Z" for d in range(1, 31)])
    options = BusyOptions(WINDOW.window_start, WINDOW.window_end, max_occurrences=10)
    result = extract_busy(body, options)
    assert len(result.intervals) == 10 and result.truncated


def test_a_series_too_frequent_for_the_cap_is_left_out_not_expanded() -> None:
    body = cal("DTSTART:20300101T000000Z\nDTEND:20300101T003000Z\nRRULE:FREQ=HOURLY",
               "DTSTART:20300107T090000Z\nDTEND:20300107T100000Z")
    options = BusyOptions(WINDOW.window_start, WINDOW.window_end, max_occurrences=100)
    result = extract_busy(body, options)
    assert result.intervals == [(utc(2030, 1, 7, 9), utc(2030, 1, 7, 10))] and result.skipped == 1


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"", "empty"), (b"<!DOCTYPE html><html><body>Sign in</body></html>", "not_calendar"),
     (b'{"error": "nope"}', "not_calendar"), (b"BEGIN:VCARD\r\nEND:VCARD\r\n", "not_calendar")],
)
def test_non_calendars_get_a_named_error(body: bytes, kind: str) -> None:
    with pytest.raises(CalendarDataError) as err:
        extract_busy(body, WINDOW)
    assert err.value.kind == kind


CORPUS_FILES = sorted(CORPUS.glob("**/*.ics"))


def test_the_corpus_is_there() -> None:
    # On CI the corpus is required, not optional (.ci/run checks it too).
    assert len(CORPUS_FILES) > 100, f"expected the corpus at {CORPUS}"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
@pytest.mark.filterwarnings("ignore")
def test_every_corpus_file_gives_busy_blocks_or_a_named_error(path: Path) -> None:
    options = BusyOptions(utc(1990, 1, 1), utc(2040, 1, 1), timezone="Europe/Berlin")
    try:
        result = extract_busy(path.read_bytes(), options)
    except CalendarDataError as exc:
        assert str(exc).endswith(".")
        return
    for start, end in result.intervals:
        assert start.tzinfo is not None and start < end


def test_a_truncated_file_reads_what_it_can_without_crashing() -> None:
    result = extract_busy(b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n\xff\xfe", WINDOW)
    assert result.intervals == []


def test_corpus_holiday_calendar_is_free_unless_every_event_counts() -> None:
    """example.ics: three all-day holidays marked TRANSPARENT (free)."""
    body = (CORPUS / "calendars" / "example.ics").read_bytes()
    window = (utc(2021, 12, 1), utc(2022, 12, 1))
    assert extract_busy(body, BusyOptions(*window)).intervals == []
    every = extract_busy(body, BusyOptions(*window, treat_all_busy=True)).intervals
    assert every == [(utc(2022, 1, 1), utc(2022, 1, 2)), (utc(2022, 1, 7), utc(2022, 1, 8)),
                     (utc(2022, 3, 8), utc(2022, 3, 9))]


# --- time zones a calendar defines (issue 14) -------------------------------------------------


def _zone(tzid: str, offset: str, rules: int = 0) -> str:
    """A VTIMEZONE with a fixed offset, and `rules` extra weekly-in-every-month rules since 1601
    (each passes the yearly-rule guard, and each conversion walks 430 years of Sundays)."""
    heavy = "".join(
        f"BEGIN:STANDARD\nDTSTART:16010101T0{r % 10}0000\nTZOFFSETFROM:{offset}\nTZOFFSETTO:{offset}\n"
        "RRULE:FREQ=YEARLY;BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;BYDAY=SU\nEND:STANDARD\n"
        for r in range(rules)
    )
    return (f"BEGIN:VTIMEZONE\nTZID:{tzid}\nBEGIN:STANDARD\nDTSTART:16010101T000000\n"
            f"TZOFFSETFROM:{offset}\nTZOFFSETTO:{offset}\nEND:STANDARD\n{heavy}END:VTIMEZONE\n")


def _in(tzid: str) -> str:
    return f"DTSTART;TZID={tzid}:20300107T100000\nDTEND;TZID={tzid}:20300107T110000"


def test_one_custom_zone_name_defined_differently_by_two_calendars() -> None:
    """Outlook calls every custom zone "Customized Time Zone"; icalendar's process-wide cache
    gave the second calendar the first one's offsets."""
    name = "Customized Time Zone"
    west = extract_busy(cal(_in(name), extra=_zone(name, "-0500")), WINDOW)
    east = extract_busy(cal(_in(name), extra=_zone(name, "+0100")), WINDOW)
    assert west.intervals == [(utc(2030, 1, 7, 15), utc(2030, 1, 7, 16))]
    assert east.intervals == [(utc(2030, 1, 7, 9), utc(2030, 1, 7, 10))]


def test_a_calendars_zones_are_not_kept_after_it_is_read() -> None:
    from icalendar.timezone import tzp

    from calsync.feeds.sources.time_zones import CACHE_ATTRIBUTE, zones_known_to_this_thread

    for n in range(5):
        extract_busy(cal(_in(f"Fresh Zone {n}"), extra=_zone(f"Fresh Zone {n}", "+0300")), WINDOW)
    assert zones_known_to_this_thread() == 0
    assert tzp.timezone("Fresh Zone 4") is None  # what the next calendar naming it would find
    # The internal this relies on (icalendar keeps its zones in this dict attribute).
    assert isinstance(getattr(tzp, CACHE_ATTRIBUTE), dict)


def test_a_zone_with_costly_rules_stops_at_the_calendars_deadline_and_blocks_no_later_one() -> None:
    """200 rules of weekly transitions since 1601: every conversion in the zone walks 4.5
    million dates (20 s here before, without an end in sight for bigger ones). The calendar's
    deadline now stops the zone's rules too; the interrupted rules (which keep dateutil's lock)
    die with the calendar, so a later calendar defining that zone is read at once."""
    hurried = BusyOptions(WINDOW.window_start, WINDOW.window_end, max_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(CalendarDataError) as err:
        extract_busy(cal(_in("Heavy Zone"), extra=_zone("Heavy Zone", "+0100", rules=200)), hurried)
    assert err.value.kind == "too_slow"
    assert time.monotonic() - started < 5
    # Read with the default deadline (2 s a series, not 0.1 s, which a loaded machine can miss
    # for this 15 ms read); a zone left locked by the first calendar would hang it for good.
    started = time.monotonic()
    light = extract_busy(cal(_in("Heavy Zone"), extra=_zone("Heavy Zone", "+0100")), WINDOW)
    assert light.intervals == [(utc(2030, 1, 7, 9), utc(2030, 1, 7, 10))]
    assert time.monotonic() - started < 2
