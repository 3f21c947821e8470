"""Published feeds obey RFC 5545 / RFC 7986 as docs/protocol.md lists: line ends, folding,
escaping, time zones, stable UIDs and sequences, calendar properties."""

from __future__ import annotations

import re
from datetime import UTC, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from calsync.feeds.demo import next_dst_change
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, events, events_by_uid, iso, soon, vobject_events
from tests.icaljs import read_events


@pytest.fixture
def staff(api: Api) -> dict:
    return api.make_staff(working_hours=ALL_DAY)


def test_feed_parses_with_three_independent_parsers(api: Api, staff: dict, icaljs: Path) -> None:
    booked = {}
    for day in range(1, 6):
        resp = api.book(staff["id"], iso(soon(day)), iso(soon(day) + timedelta(minutes=45)))
        booked[resp.get_json()["uid"]] = soon(day)
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    assert set(events_by_uid(body)) == set(booked)
    assert {str(e.uid.value) for e in vobject_events(body)} == set(booked)
    for ev in vobject_events(body):
        assert ev.dtstart.value.tzinfo is not None
    # ical.js, as Thunderbird reads it (issue 13).
    read = read_events(icaljs, body)
    assert {uid: e["start"] for uid, e in read["events"].items()} == booked
    assert read["calendar"]["name"] == "Zoë Müller · Test Salon"


def test_lines_end_in_crlf_and_fold_at_75_octets_without_splitting_characters(
    api: Api, staff: dict
) -> None:
    long_name = "Zoë-Ŝtéphanie 山田 花子 🎉 " * 8  # multi-byte characters across fold points
    api.book(
        staff["id"], iso(soon(2)), iso(soon(2) + timedelta(hours=1)),
        customer={"name": long_name.strip()[:200], "email": "z@example.com"},
        notes="Ünïcödé " * 40,
    )
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    assert body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b""), "a bare LF would break strict parsers"
    for line in body.split(b"\r\n"):
        assert len(line) <= 75, line
        line.decode("utf-8")  # raises if a fold split a multi-byte character
    summary = str(events(body)[0]["SUMMARY"])
    assert long_name.strip()[:200] in summary


@pytest.mark.parametrize(
    "hostile",
    [
        "x\r\nATTENDEE:mailto:evil@example.com",
        "x\nBEGIN:VEVENT\nUID:injected",
        "x\rEND:VCALENDAR",
        "semi;colon, comma\\ backslash",
    ],
)
def test_user_text_cannot_inject_properties(api: Api, staff: dict, hostile: str, icaljs: Path) -> None:
    one_line = "\r" not in hostile and "\n" not in hostile
    name = hostile if one_line else "Ann Lee"
    if not one_line:  # a name is one line: the API refuses a line break in it (issue 13)
        refused = api.book(staff["id"], iso(soon(2)), iso(soon(2) + timedelta(hours=1)),
                           customer={"name": hostile, "email": "c@example.com"})
        assert refused.status_code == 422 and "one line" in refused.get_json()["errors"][0]["message"]
    resp = api.book(
        staff["id"], iso(soon(2)), iso(soon(2) + timedelta(hours=1)),
        customer={"name": name, "email": "c@example.com"}, notes=hostile, location=hostile,
        service="Cut; wash, dry",
    )
    assert resp.status_code == 201, resp.get_json()
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    (event,) = events(body)
    assert "ATTENDEE" not in event
    assert len(vobject_events(body)) == 1
    # CR, LF and CRLF all come back as an (escaped) line break inside the value.
    as_text = hostile.replace("\r\n", "\n").replace("\r", "\n")
    assert str(event["LOCATION"]) == as_text
    assert as_text in str(event["DESCRIPTION"])
    assert str(event["SUMMARY"]) == f"Cut; wash, dry – {name}"
    (read,) = read_events(icaljs, body)["events"].values()
    assert (read["location"], read["summary"]) == (as_text, f"Cut; wash, dry – {name}")
    assert read["attendees"] == [] and as_text in read["description"]
    # Nothing the customer typed starts a line of its own.
    assert not re.search(rb"\r\n(ATTENDEE|UID:injected|END:VCALENDAR\r\n.)", body)


def test_every_tzid_has_a_vtimezone_and_times_survive_dst(api: Api, icaljs: Path) -> None:
    berlin = api.make_staff(name="Berlin", email="b@example.com", timezone="Europe/Berlin",
                            working_hours=ALL_DAY)
    new_york = api.make_staff(name="NY", email="n@example.com", timezone="America/New_York",
                              working_hours=ALL_DAY)
    change = next_dst_change("Europe/Berlin", soon(0))
    assert change is not None
    booked = {}
    for who in (berlin, new_york):
        tz = ZoneInfo(who["timezone"])
        for offset_days in (-2, 2):
            local = (change + timedelta(days=offset_days)).astimezone(tz).replace(
                hour=10, minute=0, second=0, microsecond=0
            )
            resp = api.book(who["id"], iso(local), iso(local + timedelta(hours=1)))
            assert resp.status_code == 201, resp.get_json()
            booked[resp.get_json()["uid"]] = local.astimezone(UTC)
    # The company feed has both zones.
    company_id = api.get("/feeds").get_json()["feeds"]
    company_token = next(f for f in company_id if f["scope"] == "company")
    body = api.client.get("/feeds/" + company_token["url"].rsplit("/feeds/", 1)[1]).data
    used = set(re.findall(rb";TZID=([^:;]+)[:;]", body))
    declared = set(re.findall(rb"\r\nTZID:([^\r]+)\r\n", body))
    assert used == {b"Europe/Berlin", b"America/New_York"}
    assert used <= declared
    assert b"X-WR-TIMEZONE:Europe/Berlin" in body
    for uid, event in events_by_uid(body).items():
        start = event.decoded("DTSTART")
        assert start.astimezone(UTC) == booked[uid]
        assert start.astimezone(start.tzinfo).hour == 10  # 10:00 wall time on both sides of DST
    # vobject and ical.js resolve the same instants from the VTIMEZONE blocks alone.
    for ev in vobject_events(body):
        assert ev.dtstart.value.astimezone(UTC) == booked[ev.uid.value]
    assert {uid: e["start"] for uid, e in read_events(icaljs, body)["events"].items()} == booked


def test_uid_stays_and_sequence_grows_across_reschedule_and_cancel(api: Api, staff: dict) -> None:
    api.patch("/settings", {"show_cancelled": True})
    appt = api.book(staff["id"], iso(soon(4)), iso(soon(4) + timedelta(hours=1))).get_json()
    url = api.feed_url("staff", staff["id"])
    first = events_by_uid(api.client.get(url).data)[appt["uid"]]
    assert first["SEQUENCE"] == 0
    moved = api.patch(f"/appointments/{appt['id']}",
                      {"start": iso(soon(5)), "end": iso(soon(5) + timedelta(hours=1))})
    assert moved.status_code == 200
    second = events_by_uid(api.client.get(url).data)[appt["uid"]]
    assert second["SEQUENCE"] == 1
    assert second.decoded("DTSTART").astimezone(UTC) == soon(5)
    api.post(f"/appointments/{appt['id']}/cancel")
    third = events_by_uid(api.client.get(url).data)[appt["uid"]]
    assert third["SEQUENCE"] == 2
    assert third["STATUS"] == "CANCELLED"


def test_cancelled_appointments_leave_the_feed_by_default(api: Api, staff: dict) -> None:
    keep = api.book(staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1))).get_json()
    gone = api.book(staff["id"], iso(soon(4)), iso(soon(4) + timedelta(hours=1))).get_json()
    api.post(f"/appointments/{gone['id']}/cancel")
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    assert set(events_by_uid(body)) == {keep["uid"]}


def test_calendar_properties_and_event_basics(api: Api, staff: dict) -> None:
    api.patch("/settings", {"feed_refresh_minutes": 30, "feed_color": "cornflowerblue"})
    api.book(staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1)))
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    text = body.decode()
    assert "\r\nREFRESH-INTERVAL;VALUE=DURATION:PT30M\r\n" in text
    assert "\r\nX-PUBLISHED-TTL:PT30M\r\n" in text
    assert "\r\nNAME:Zoë Müller · Test Salon\r\n" in text
    assert "\r\nX-WR-CALNAME:Zoë Müller · Test Salon\r\n" in text
    assert "\r\nCOLOR:cornflowerblue\r\n" in text
    assert "\r\nMETHOD:PUBLISH\r\n" in text
    (event,) = events(body)
    assert event["TRANSP"] == "OPAQUE"
    assert event["STATUS"] == "CONFIRMED"
    assert event.decoded("DTSTAMP").tzinfo is not None


def test_same_data_gives_same_bytes_whenever_it_is_rendered(api: Api, staff: dict, app) -> None:
    """DTSTAMP comes from the last change, not the request: a re-render is byte-identical."""
    from calsync.models import FeedFragment, FeedSegment

    api.book(staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1)))
    url = api.feed_url("staff", staff["id"])
    first = api.client.get(url)
    services = app.extensions["calsync"]
    services.feed_cache.memory.clear()
    with services.sessions.begin() as session:
        session.query(FeedSegment).delete()
        session.query(FeedFragment).delete()
    second = api.client.get(url)
    assert first.data == second.data
    assert first.headers["ETag"] == second.headers["ETag"]


def test_window_limits_what_is_published(api: Api, staff: dict) -> None:
    api.patch("/settings", {"feed_window_future_days": 10, "feed_window_past_days": 0})
    inside = api.book(staff["id"], iso(soon(3)), iso(soon(3) + timedelta(hours=1))).get_json()
    api.book(staff["id"], iso(soon(30)), iso(soon(30) + timedelta(hours=1)))
    body = api.client.get(api.feed_url("staff", staff["id"])).data
    assert set(events_by_uid(body)) == {inside["uid"]}
