"""Issue 13, the rest of what clients read, through the API and a real server: Last-Modified
never after Date, names without line breaks, no control character in any feed whatever an
admin typed, CSS3 COLOR, subscribe links with the feed's name, cancelled events that block no
time; and the copies in staff calendars (ORGANIZER, the staff member's zone, SEQUENCE)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from calsync.bench.served_wsgi import ServedWSGI
from calsync.feeds.demo import load_demo
from calsync.models import Appointment, Company, Group, Staff
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, control_characters, events, iso, soon
from tests.icaljs import read_events
from tests.linked_helpers import Linked

HOSTILE = "Zoë\r\nX-INJECTED:1\x00\x1b[2J\x7f\x85 end"
STORED = HOSTILE.replace("\x00", "\x01")  # PostgreSQL stores no NUL in text


# --- Last-Modified --------------------------------------------------------------------------


def test_last_modified_is_never_after_date_after_a_bulk_load_of_500(app: Flask, api: Api) -> None:
    """Before issue 13 every change pushed the change time a second further, so a bulk load put
    Last-Modified minutes into the future."""
    services = app.extensions["calsync"]
    with services.sessions.begin() as session:
        company = session.scalars(select(Company)).one()
        result = load_demo(session, company, staff_count=2, appointment_count=500)
        assert result.appointments == 500
    with services.sessions() as session:
        staff_ids = list(session.scalars(select(Staff.id)))
        group_id = session.scalars(select(Group.id)).first()
    urls = [api.feed_url("staff", staff_ids[0]), api.feed_url("group", group_id),
            api.feed_url("company", company.id)]
    # Served by waitress, as in production: the Date header is the server's own.
    server = ServedWSGI(app, threads=2)
    base = server.url
    try:
        for url in urls:
            resp = requests.get(base + url, timeout=30)
            assert resp.status_code == 200 and resp.content.count(b"BEGIN:VEVENT") > 100
            modified = parsedate_to_datetime(resp.headers["Last-Modified"])
            assert modified <= parsedate_to_datetime(resp.headers["Date"]), url
            # The date still revalidates: the same answer, or a 304 once its second is over.
            again = requests.get(base + url, headers={"If-Modified-Since": resp.headers["Last-Modified"]},
                                 timeout=30)
            assert again.status_code in (200, 304)
            if again.status_code == 200:
                assert again.content == resp.content
    finally:
        server.close()


def test_two_changes_in_one_second_each_change_the_validators(api: Api) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    url = api.feed_url("staff", staff["id"])
    appt = api.book(staff["id"], iso(soon(3)), iso(soon(3, 11))).get_json()
    first = api.client.get(url)
    api.patch(f"/appointments/{appt['id']}", {"start": iso(soon(4)), "end": iso(soon(4, 11))})
    second = api.client.get(url)
    api.post(f"/appointments/{appt['id']}/cancel")
    for held in (first, second):
        by_date = api.client.get(url, headers={"If-Modified-Since": held.headers["Last-Modified"]})
        by_tag = api.client.get(url, headers={"If-None-Match": held.headers["ETag"]})
        assert (by_date.status_code, by_tag.status_code) == (200, 200)
        assert events(by_date.data) == []


# --- names and text -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Zoë\nMüller", "Zoë\r\nMüller", "Zoë\rMüller", "Zoë\x00", "Zoë\tM",
                                  "Zoë\u2028Müller"])
def test_a_name_with_a_line_break_or_control_character_is_refused_with_a_sentence(
    api: Api, name: str
) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    attempts = [
        api.post("/staff", {"name": name, "email": "x@example.com", "timezone": "Europe/Berlin"}),
        api.patch(f"/staff/{staff['id']}", {"name": name}),
        api.post("/groups", {"name": name, "staff_ids": [staff["id"]]}),
        api.book(staff["id"], iso(soon(3)), iso(soon(3, 11)), customer={"name": name}),
        api.book(staff["id"], iso(soon(3)), iso(soon(3, 11)), service=name),
    ]
    for resp in attempts:
        assert resp.status_code == 422, resp.get_json()
        (error,) = resp.get_json()["errors"]
        assert error["message"].startswith("Write the name on one line")
    assert api.get(f"/staff/{staff['id']}").get_json()["name"] == "Zoë Müller"


def _stored_hostile_names(session: Session) -> None:
    """What an admin typed before the API refused it, or through a path that does not check
    (the CLI's company name): written straight into the database."""
    session.execute(update(Company).values(name=STORED))
    session.execute(update(Staff).values(name=STORED))
    session.execute(update(Group).values(name=STORED))
    session.execute(update(Appointment).values(notes=STORED, location=STORED,
                                               revision=Appointment.revision + 1))
    session.execute(update(Staff).values(feed_revision=Staff.feed_revision + 1))
    session.execute(update(Company).values(feed_epoch=Company.feed_epoch + 1))


@pytest.mark.parametrize("privacy", ["full", "limited", "busy"])
def test_no_feed_holds_a_control_character_whatever_was_typed(
    app: Flask, api: Api, company_id: int, privacy: str, icaljs: Path
) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    group = api.post("/groups", {"name": "Hair", "staff_ids": [staff["id"]]}).get_json()
    api.patch("/settings", {"show_cancelled": True})
    # Line breaks in notes are fine; other control characters are refused (PostgreSQL cannot
    # even store NUL), and what got into the database some other way is cleaned on output.
    typed = "Line 1\r\nLine 2\rLine 3\n\tend"
    refused = api.book(staff["id"], iso(soon(3)), iso(soon(3, 11)), notes=HOSTILE)
    assert refused.status_code == 422
    assert refused.get_json()["errors"][0]["message"].startswith("Remove the control characters")
    ok = api.book(staff["id"], iso(soon(3)), iso(soon(3, 11)), notes=typed, location=typed,
                  customer={"name": "Ann Lee", "email": "ann@example.com"})
    assert ok.status_code == 201, ok.get_json()
    cancelled = api.book(staff["id"], iso(soon(4)), iso(soon(4, 11))).get_json()
    api.post(f"/appointments/{cancelled['id']}/cancel")
    urls = [api.feed_url("staff", staff["id"], privacy), api.feed_url("group", group["id"], privacy),
            api.feed_url("company", company_id, privacy)]
    with app.extensions["calsync"].sessions.begin() as session:
        _stored_hostile_names(session)
    for url in urls:
        resp = api.client.get(url)
        assert resp.status_code == 200
        assert control_characters(resp.data) == [], url
        assert b"\r\nX-INJECTED" not in resp.data
        read = read_events(icaljs, resp.data)
        assert "\n" not in read["calendar"]["name"] and read["calendar"]["name"].endswith(" end")
        assert len(read["events"]) == 2
        for event in read["events"].values():
            assert "\n" not in event["summary"] and "\r" not in event["summary"]


def test_a_cancelled_booking_kept_in_a_feed_blocks_no_time_at_any_privacy_level(
    api: Api, icaljs: Path
) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    api.patch("/settings", {"show_cancelled": True})
    appt = api.book(staff["id"], iso(soon(3)), iso(soon(3, 11))).get_json()
    api.post(f"/appointments/{appt['id']}/cancel")
    for privacy in ("full", "limited", "busy"):
        body = api.client.get(api.feed_url("staff", staff["id"], privacy)).data
        (event,) = read_events(icaljs, body)["events"].values()
        assert (event["status"], event["transp"]) == ("CANCELLED", "TRANSPARENT"), privacy
        assert event["summary"].startswith("Cancelled"), privacy


# --- COLOR and subscribe links --------------------------------------------------------------


def test_feed_colour_is_a_css3_name_or_a_422_sentence(app: Flask, api: Api) -> None:
    staff = api.make_staff(working_hours=ALL_DAY)
    url = api.feed_url("staff", staff["id"])
    for bad in ("#3366cc", "red\r\nX-A:1", "not-a-colour"):
        resp = api.patch("/settings", {"feed_color": bad})
        assert resp.status_code == 422
        assert "CSS3 colour name" in resp.get_json()["errors"][0]["message"]
    assert api.get("/settings").get_json()["feed_color"] is None
    assert api.patch("/settings", {"feed_color": "Teal"}).get_json()["feed_color"] == "teal"
    assert b"\r\nCOLOR:teal\r\n" in api.client.get(url).data
    # A colour saved before the rule (#rrggbb was taken) leaves feeds and settings working.
    with app.extensions["calsync"].sessions.begin() as session:
        company = session.scalars(select(Company)).one()
        company.settings = {**company.settings, "feed_color": "#3366cc"}
        company.feed_epoch += 1
    resp = api.client.get(url)
    assert resp.status_code == 200 and b"COLOR" not in resp.data
    assert api.get("/settings").get_json()["feed_color"] is None


def test_outlook_and_microsoft_365_links_carry_the_feeds_own_name(api: Api) -> None:
    staff = api.make_staff(name="Zoë & Co", working_hours=ALL_DAY)
    group = api.post("/groups", {"name": "Hair + Beauty", "staff_ids": [staff["id"]]}).get_json()
    api.feed_url("group", group["id"])
    names = {"staff": "Zoë & Co", "group": "Hair + Beauty", "company": "Test Salon"}
    feeds = api.get("/feeds").get_json()["feeds"]
    assert {f["scope"] for f in feeds} == set(names)
    for feed in feeds:
        for key in ("outlook_url", "office365_url"):
            query = parse_qs(urlsplit(feed[key]).query)
            assert query == {"url": [feed["url"]], "name": [names[feed["scope"]]]}, feed[key]


# --- copies in staff calendars --------------------------------------------------------------


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(update={"allow_private_networks": True})


def test_the_copy_has_an_organizer_keeps_the_zone_and_never_lowers_sequence_after_a_move(
    app: Flask, api: Api, caldav_server: Any, icaljs: Path
) -> None:
    linked = Linked(app, api, caldav_server, working_hours=ALL_DAY)
    api.patch(f"/staff/{linked.staff['id']}", {"timezone": "Europe/Berlin"})
    berlin = ZoneInfo("Europe/Berlin")
    start = soon(3)
    appt = linked.book(start)
    assert linked.sync().status == "ok"
    event = linked.event(appt["uid"])
    body = event.data.encode() if isinstance(event.data, str) else event.data
    read = read_events(icaljs, body)["events"][appt["uid"]]
    assert read["start"] == start
    assert read["organizer"]["address"] == f"mailto:{app.extensions['calsync'].settings.mail_from}"
    assert read["organizer"]["cn"] == "Test Salon"
    assert [a["scheduleAgent"] for a in read["attendees"]] == ["CLIENT"]
    comp = event.icalendar_component
    assert comp["ORGANIZER"].params["SCHEDULE-AGENT"] == "CLIENT"  # RFC 6638 §7.1
    assert comp["DTSTART"].params["TZID"] == "Europe/Berlin"
    # The staff member drags it two hours later in their calendar app, which writes it in their
    # zone and raises SEQUENCE as Thunderbird and Apple Calendar do.
    moved = (start + timedelta(hours=2)).astimezone(berlin)
    for name, value in (("DTSTART", moved), ("DTEND", moved + timedelta(hours=1))):
        comp.pop(name)
        comp.add(name, value)
    comp.pop("SEQUENCE")
    comp.add("SEQUENCE", 7)
    event.save()  # (the caldav library raises SEQUENCE once more, as some apps do)
    in_calendar = linked.event(appt["uid"]).icalendar_component["SEQUENCE"]
    assert in_calendar >= 7
    assert linked.sync().status == "ok"
    now = linked.appointment(appt["id"])
    assert now["start"] == iso(moved.astimezone(UTC)).replace("+00:00", "Z")
    assert now["sequence"] >= in_calendar  # and so the customer's next iTIP is newer too
    linked.sync()  # writes the refreshed copy back
    back = linked.event(appt["uid"]).icalendar_component
    assert back["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert back.decoded("DTSTART").astimezone(UTC) == moved.astimezone(UTC)
    assert back["SEQUENCE"] == now["sequence"] >= in_calendar
    assert datetime.now(UTC) < back.decoded("DTSTART")
