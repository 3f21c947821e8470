"""The one VEVENT builder (feeds/ical/vevent.py): each parameter's effect, read back with icalendar
and vobject, and the three users (feed, push copy, iTIP) built from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject

from calsync.feeds.calendars.push import render_copy
from calsync.feeds.ical.vevent import Party, build_vevent
from calsync.feeds.ical.vtimezone import vtimezone
from calsync.feeds.mail.itip import Organizer, build_itip
from calsync.feeds.publishing.render import Variant, render_event

START = datetime(2026, 3, 29, 8, 30, tzinfo=UTC)  # Berlin's spring change is at 01:00 UTC


@dataclass
class Appt:
    uid: str = "a1@calsync.test"
    sequence: int = 3
    created_at: datetime = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated_at: datetime = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    start_at: datetime = START
    end_at: datetime = START + timedelta(minutes=45)
    location: str | None = "Room 2, upstairs"
    # what render_event, render_copy and build_itip read besides the builder
    id: int = 7
    service: str = "Cut; wash, dry"
    notes: str | None = "Bring\nthe voucher"
    status: str = "confirmed"
    staff: Any = field(default_factory=lambda: SimpleNamespace(name="Zoë", timezone="Europe/Berlin"))
    customer: Any = field(default_factory=lambda: SimpleNamespace(
        name='Ann "A" Lee, Jr.', email="ann@example.com", phone="+49 30 1"))


def wrap(event: icalendar.Event) -> bytes:
    cal = icalendar.Calendar()
    cal.add("prodid", "-//test//EN")
    cal.add("version", "2.0")
    body = cal.to_ical()
    if "TZID" in event["DTSTART"].params:  # the feed's own VTIMEZONE (issue 13)
        zone = vtimezone(event["DTSTART"].params["TZID"], date(2025, 1, 1), date(2028, 1, 1))
        body = body.replace(b"END:VCALENDAR", zone.encode() + b"END:VCALENDAR")
    return body.replace(b"END:VCALENDAR", event.to_ical() + b"END:VCALENDAR")


def both(event: icalendar.Event) -> tuple[icalendar.Event, Any]:
    """The event parsed back by icalendar and by vobject."""
    body = wrap(event)
    (ical,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
    (vob,) = vobject.readOne(body.decode()).vevent_list
    return ical, vob


def build(**kwargs: Any) -> icalendar.Event:
    kwargs.setdefault("summary", "Cut")
    kwargs.setdefault("description", "Details")
    return build_vevent(Appt(), **kwargs)


def test_the_defaults_carry_everything_in_utc() -> None:
    ical, vob = both(build())
    assert str(ical["UID"]) == vob.uid.value == "a1@calsync.test"
    assert ical["SEQUENCE"] == int(vob.sequence.value) == 3
    assert ical.decoded("DTSTART") == vob.dtstart.value == START
    assert ical.decoded("DTEND") - ical.decoded("DTSTART") == timedelta(minutes=45)
    assert ical.decoded("DTSTAMP") == vob.dtstamp.value == Appt.updated_at
    assert ical.decoded("CREATED") == Appt.created_at
    assert ical.decoded("LAST-MODIFIED") == Appt.updated_at
    assert str(ical["LOCATION"]) == vob.location.value == "Room 2, upstairs"
    assert vob.description.value == "Details"
    assert (ical["TRANSP"], ical["STATUS"]) == ("OPAQUE", "CONFIRMED")
    assert "CLASS" not in ical and "ORGANIZER" not in ical and "ATTENDEE" not in ical
    assert b"DTSTART:20260329T083000Z" in wrap(build())


def test_times_in_a_zone_carry_its_tzid_and_the_same_instant() -> None:
    ical, vob = both(build(times_in=ZoneInfo("Europe/Berlin")))
    assert ical["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert ical.decoded("DTSTART").hour == 10  # CEST from 01:00 UTC that day
    assert ical.decoded("DTSTART") == vob.dtstart.value == START


@pytest.mark.parametrize(("privacy", "has_description", "has_location", "klass"), [
    ("full", True, True, None),
    ("limited", True, False, None),
    ("busy", False, False, "PRIVATE"),
])
def test_privacy_levels_drop_what_they_hide(privacy: str, has_description: bool,
                                            has_location: bool, klass: str | None) -> None:
    ical, vob = both(build(privacy=privacy))
    assert ("DESCRIPTION" in ical) is has_description is hasattr(vob, "description")
    assert ("LOCATION" in ical) is has_location is hasattr(vob, "location")
    assert ical.get("CLASS") == klass
    assert str(ical["SUMMARY"]) == vob.summary.value == "Cut"  # the caller's words, always


def test_an_unknown_privacy_level_or_method_is_refused() -> None:
    with pytest.raises(ValueError, match="privacy level"):
        build(privacy="secret")
    with pytest.raises(ValueError, match="iTIP method"):
        build(method="PUBLISH")


def test_history_off_leaves_out_created_and_last_modified() -> None:
    ical, _ = both(build(history=False))
    assert "CREATED" not in ical and "LAST-MODIFIED" not in ical and "DTSTAMP" in ical


@pytest.mark.parametrize(("cancelled", "method", "status"), [
    (False, None, "CONFIRMED"), (True, None, "CANCELLED"),
    (False, "REQUEST", "CONFIRMED"), (True, "REQUEST", "CANCELLED"), (False, "CANCEL", "CANCELLED"),
])
def test_status_follows_the_cancelled_mark_and_the_method(cancelled: bool, method: str | None,
                                                          status: str) -> None:
    ical, vob = both(build(cancelled=cancelled, method=method))
    assert ical["STATUS"] == vob.status.value == status


def test_transp() -> None:
    assert both(build(transparent=True))[1].transp.value == "TRANSPARENT"
    assert both(build(transparent=False))[1].transp.value == "OPAQUE"


def test_organizer_and_attendee_with_their_parameters() -> None:
    ical, vob = both(build(
        organizer=Party("salon@example.com", "Salon; Zoë"),
        attendee=Party("ann@example.com", 'Ann "A" Lee', (("SCHEDULE-AGENT", "CLIENT"),
                                                            ("PARTSTAT", "ACCEPTED"))),
    ))
    assert str(ical["ORGANIZER"]) == vob.organizer.value == "mailto:salon@example.com"
    assert vob.organizer.params["CN"] == ["Salon; Zoë"]
    assert str(ical["ATTENDEE"]) == "mailto:ann@example.com"
    assert vob.attendee.params["SCHEDULE-AGENT"] == ["CLIENT"]
    assert ical["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED"
    # RFC 6868: the double quote inside CN survives as ^' and comes back as a quote.
    assert ical["ATTENDEE"].params["CN"] == 'Ann "A" Lee'


def test_extra_properties_and_hostile_text_stay_inside_their_values() -> None:
    hostile = "x\r\nATTENDEE:mailto:evil@example.com"
    ical, vob = both(build(summary=hostile, description=hostile,
                           extra=(("x-calsync-appointment", "7"),)))
    assert ical["X-CALSYNC-APPOINTMENT"] == "7"
    assert "ATTENDEE" not in ical and not hasattr(vob, "attendee")
    # A title is one line (the line break a space); a description keeps it, escaped.
    assert vob.summary.value == "x ATTENDEE:mailto:evil@example.com"
    assert vob.description.value == "x\nATTENDEE:mailto:evil@example.com"


# --- the three users --------------------------------------------------------------------------


def test_the_feed_event_is_local_with_history_and_privacy() -> None:
    full = icalendar.Event.from_ical(render_event(Appt(), Variant("full", names_staff=True)))
    assert full["DTSTART"].params["TZID"] == "Europe/Berlin" and "CREATED" in full
    assert str(full["SUMMARY"]) == 'Cut; wash, dry – Ann "A" Lee, Jr. (Zoë)'
    busy = icalendar.Event.from_ical(render_event(Appt(), Variant("busy", names_staff=False)))
    assert (str(busy["SUMMARY"]), busy["CLASS"]) == ("Busy", "PRIVATE")
    assert "DESCRIPTION" not in busy and "LOCATION" not in busy and "ATTENDEE" not in busy


def test_the_push_copy_has_a_client_scheduled_attendee_and_the_cancelled_mark() -> None:
    (event,) = icalendar.Calendar.from_ical(render_copy(Appt(), mark_cancelled=True)).walk("VEVENT")
    assert event["ATTENDEE"].params["SCHEDULE-AGENT"] == "CLIENT"  # RFC 6638 §7.1
    assert (event["STATUS"], event["TRANSP"]) == ("CANCELLED", "TRANSPARENT")
    assert str(event["SUMMARY"]).startswith("Cancelled: ")
    assert event["X-CALSYNC-APPOINTMENT"] == "7"
    assert "CREATED" not in event
    # RFC 5545 §3.8.4.3: with an ATTENDEE comes the ORGANIZER, also SCHEDULE-AGENT=CLIENT.
    assert event["ORGANIZER"].params["SCHEDULE-AGENT"] == "CLIENT"
    # In the staff member's zone, with its VTIMEZONE (10:30 in Berlin, summer time).
    body = render_copy(Appt()).encode()
    assert b"DTSTART;TZID=Europe/Berlin:20260329T103000" in body and b"TZID:Europe/Berlin" in body
    (booked,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
    assert booked.decoded("DTSTART") == START and booked["TRANSP"] == "OPAQUE"


@pytest.mark.parametrize(("method", "status"), [("REQUEST", "CONFIRMED"), ("CANCEL", "CANCELLED")])
def test_itip_carries_method_organizer_and_attendee(method: str, status: str) -> None:
    body = build_itip(Appt(), method, Organizer("Salon", "salon@example.com"), "Your booking", "Text")
    cal = icalendar.Calendar.from_ical(body)
    (event,) = cal.walk("VEVENT")
    assert (cal["METHOD"], event["STATUS"], event["SEQUENCE"]) == (method, status, 3)
    assert str(event["ORGANIZER"]) == "mailto:salon@example.com"
    assert event["ATTENDEE"].params["RSVP"] == "FALSE"
    assert event.decoded("DTSTART") == START and b"DTSTART:20260329T083000Z" in body
