"""Issue 13, what clients read besides the times: control characters never reach the output,
cancelled events block no time, COLOR is a CSS3 name, subscribe links carry the feed's name."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import icalendar
import pytest
from pydantic import ValidationError

from calsync.feeds.calendars.push import render_copy
from calsync.feeds.company_settings import STORED, CompanySettings
from calsync.feeds.ical.vevent import one_line, text_value
from calsync.feeds.mail.itip import Organizer, build_itip
from calsync.feeds.publishing.render import FOOTER, Variant, render_event, render_header
from calsync.feeds.publishing.tokens import feed_links
from tests.feed_helpers import control_characters

START = datetime(2026, 6, 3, 8, 0, tzinfo=UTC)
# Every C0 control, DEL, a C1 control (NEL), CR, LF, CRLF, and a lone surrogate (JSON's
# "\ud800" decodes to one; it cannot be written as UTF-8 at all).
HOSTILE = "A\tb\r\nc\rd\ne" + "".join(map(chr, range(0x20))) + "\x7f\x85\ud800 end"
VARIANTS = [Variant(p, names_staff=s) for p in ("full", "limited", "busy") for s in (False, True)]


@dataclass
class Appt:
    uid: str = "a1@calsync.test"
    sequence: int = 1
    created_at: datetime = datetime(2026, 1, 2, tzinfo=UTC)
    updated_at: datetime = datetime(2026, 2, 3, tzinfo=UTC)
    start_at: datetime = START
    end_at: datetime = START + timedelta(hours=1)
    location: str | None = HOSTILE
    id: int = 7
    service: str = HOSTILE
    notes: str | None = HOSTILE
    status: str = "confirmed"
    staff: Any = field(default_factory=lambda: SimpleNamespace(name=HOSTILE, timezone="Europe/Berlin"))
    customer: Any = field(default_factory=lambda: SimpleNamespace(
        name=HOSTILE, email="ann@example.com", phone="+49 30 1"))


def feed(appt: Appt, name: str = HOSTILE, variants: list[Variant] = VARIANTS) -> bytes:
    header = render_header(name=name, timezone="Europe/Berlin", timezones=["Europe/Berlin"],
                           refresh=timedelta(hours=1), color=None,
                           window=(START - timedelta(days=1), START + timedelta(days=1)))
    return (header + "".join(render_event(appt, v) for v in variants) + FOOTER).encode("utf-8")


def test_cleaning_keeps_words_and_drops_only_controls() -> None:
    assert one_line("Ann\r\nLee\x00\tJr.") == "Ann Lee Jr."
    assert text_value("Line 1\r\nLine 2\rLine 3\x00\x1b[31m\tx\x7f") == "Line 1\nLine 2\nLine 3[31m\tx"
    assert text_value("a\ud83d\ude00\ud800") == "a😀\ufffd"  # a proper pair is kept, a lone one marked
    assert one_line("Zoë Müller 山田") == "Zoë Müller 山田"  # nothing to do: the same object back


def test_a_feed_of_hostile_names_and_notes_has_no_control_byte_and_reads_back() -> None:
    body = feed(Appt())
    assert control_characters(body) == []
    cal = icalendar.Calendar.from_ical(body)
    assert "\n" not in str(cal["X-WR-CALNAME"]) and str(cal["NAME"]).endswith(" end")
    for event in cal.walk("VEVENT"):
        assert "\n" not in str(event["SUMMARY"]) and "\r" not in str(event["SUMMARY"])
    full = cal.walk("VEVENT")[0]
    assert "A\tb\nc\nd\ne" in str(full["DESCRIPTION"])  # line breaks of notes stay line breaks


def test_the_push_copy_and_the_itip_message_have_no_control_byte_either() -> None:
    copy = render_copy(Appt()).encode("utf-8")
    itip = build_itip(Appt(), "REQUEST", Organizer(HOSTILE, "salon@example.com"), HOSTILE, HOSTILE)
    for body in (copy, itip):
        assert control_characters(body) == [], body
        (event,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
        assert "\n" not in event["ORGANIZER"].params["CN"] + event["ATTENDEE"].params["CN"]


def test_the_control_byte_check_is_not_vacuous() -> None:
    # icalendar on its own lets NUL and DEL through into a value.
    event = icalendar.Event()
    event.add("summary", "a\x00b\x7f")
    assert control_characters(event.to_ical()) != []


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.key)
def test_a_cancelled_appointment_kept_in_a_feed_blocks_no_time_and_says_so(variant: Variant) -> None:
    appt = Appt(service="Cut", location=None, notes=None, status="cancelled",
                staff=SimpleNamespace(name="Zoë", timezone="Europe/Berlin"),
                customer=SimpleNamespace(name="Ann", email=None, phone=None))
    event = icalendar.Event.from_ical(render_event(appt, variant))
    assert (event["STATUS"], event["TRANSP"]) == ("CANCELLED", "TRANSPARENT")
    summary = str(event["SUMMARY"])
    if variant.privacy == "busy":
        assert summary.startswith("Cancelled") and "Busy" not in summary
    else:
        assert summary.startswith("Cancelled: Cut")
    booked = icalendar.Event.from_ical(render_event(Appt(status="confirmed"), variant))
    assert (booked["STATUS"], booked["TRANSP"]) == ("CONFIRMED", "OPAQUE")
    assert not str(booked["SUMMARY"]).startswith("Cancelled")


@pytest.mark.parametrize("colour", ["teal", "CornflowerBlue", " red ", "grey", "gray"])
def test_feed_colour_takes_css3_names(colour: str) -> None:
    assert CompanySettings(feed_color=colour).feed_color == colour.strip().lower()


@pytest.mark.parametrize("colour", ["#3366cc", "rgb(0,0,0)", "red;x", "notacolour", "rebeccapurple",
                                    "red\r\nX-INJECT:1", 12])
def test_feed_colour_refuses_anything_else_with_a_sentence(colour: object) -> None:
    with pytest.raises(ValidationError) as caught:
        CompanySettings(feed_color=colour)
    assert "CSS3 colour name" in caught.value.errors()[0]["msg"]


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_an_empty_colour_is_none(empty: str | None) -> None:
    assert CompanySettings(feed_color=empty).feed_color is None


def test_a_colour_stored_before_the_rule_is_dropped_on_reading_not_a_failure() -> None:
    assert CompanySettings.model_validate({"feed_color": "#3366cc"}, context=STORED).feed_color is None
    assert CompanySettings.model_validate({"feed_color": "teal"}, context=STORED).feed_color == "teal"


@pytest.mark.parametrize("name", ["Zoë Müller", "Hair & Beauty", "Salon Sommer & Söhne", "a+b=c?#/"])
def test_outlook_links_carry_the_feeds_own_name(name: str) -> None:
    links = feed_links("https://cal.example.test", "tok", name=name)
    for link in (links.outlook_url, links.office365_url):
        query = parse_qs(urlsplit(link).query, strict_parsing=True)
        assert query == {"url": ["https://cal.example.test/feeds/tok.ics"], "name": [name]}
    assert links.outlook_url.startswith("https://outlook.live.com/calendar/0/addfromweb?")
    assert links.office365_url.startswith("https://outlook.office.com/calendar/0/addfromweb?")


def test_the_copy_covers_its_instant_with_a_vtimezone_of_the_staff_zone() -> None:
    body = render_copy(Appt(service="Cut", staff=SimpleNamespace(name="Z", timezone="America/New_York")))
    cal = icalendar.Calendar.from_ical(body)
    (zone,) = cal.walk("VTIMEZONE")
    assert zone["TZID"] == "America/New_York"
    tz = zone.to_tz(lookup_tzid=False)
    (event,) = cal.walk("VEVENT")
    start = event.decoded("DTSTART").replace(tzinfo=None)
    local = tz.localize(start) if hasattr(tz, "localize") else start.replace(tzinfo=tz)
    assert local.astimezone(UTC) == START
    utc_staff = render_copy(Appt(staff=SimpleNamespace(name="Z", timezone="UTC")))
    assert "VTIMEZONE" not in utc_staff and f"DTSTART:{START:%Y%m%dT%H%M%S}Z" in utc_staff
