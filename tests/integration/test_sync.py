"""The one-way sync: external calendars → busy blocks, with health, alerts and the lease.
Real servers throughout: an HTTP server for ICS, Radicale and Xandikos for CalDAV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.models import Alert, BusyBlock, Connection
from tests.clock import day_at
from tests.feed_helpers import ALL_DAY
from tests.servers import CalDAVServer, CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The servers of these tests listen on loopback.
    return settings.model_copy(update={"allow_private_networks": True})


def day(offset: int, hour: int = 9) -> datetime:
    return day_at(offset, hour)


def ics(*events: tuple[datetime, datetime, str]) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN"]
    for i, (start, end, extra) in enumerate(events):
        lines += ["BEGIN:VEVENT", f"UID:ev{i}@test", "DTSTAMP:20260101T000000Z",
                  f"DTSTART:{start:%Y%m%dT%H%M%SZ}", f"DTEND:{end:%Y%m%dT%H%M%SZ}",
                  "SUMMARY:Private dentist appointment"]
        lines += [x for x in extra.split("\n") if x]
        lines.append("END:VEVENT")
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


class World:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.services = app.extensions["calsync"]
        with self.services.sessions.begin() as s:
            company = get_or_create_company(s, "Sync Co", "Europe/Berlin")
            self.staff_id = create_staff(s, company, name="Zoë", email="z@example.com",
                                         timezone="Europe/Berlin", working_hours=ALL_DAY).id

    def connect(self, **fields: object) -> int:
        with self.services.sessions.begin() as s:
            company = get_or_create_company(s)
            conn = create_connection(s, company, self.services.vault, self.staff_id,
                                     ConnectionInput(**fields), allow_private=True)  # type: ignore[arg-type]
            return conn.id

    def sync(self, connection_id: int):  # type: ignore[no-untyped-def]
        return sync_connection(self.services.sync, connection_id)

    def busy(self, connection_id: int) -> list[tuple[datetime, datetime]]:
        with self.services.sessions() as s:
            return [(b.start_at, b.end_at) for b in s.scalars(
                select(BusyBlock).where(BusyBlock.connection_id == connection_id)
                .order_by(BusyBlock.start_at))]

    def connection(self, connection_id: int) -> Connection:
        with self.services.sessions() as s:
            conn = s.get(Connection, connection_id)
            assert conn is not None
            return conn


@pytest.fixture
def world(app: Flask) -> World:
    return World(app)


def test_ics_sync_reads_busy_time_and_records_health(world: World,
                                                     calendar_http: CalendarHTTPServer) -> None:
    body = ics((day(1), day(1, 10), ""), (day(2), day(2, 11), "TRANSP:TRANSPARENT"))
    url = calendar_http.add("/cal.ics", body)
    cid = world.connect(kind="ics", url=url)
    assert world.connection(cid).status == "pending"
    outcome = world.sync(cid)
    assert outcome.status == "ok"
    assert world.busy(cid) == [(day(1), day(1, 10))]
    conn = world.connection(cid)
    assert (conn.status, conn.busy_count, conn.consecutive_failures) == ("ok", 1, 0)
    assert conn.last_success_at is not None and conn.next_sync_at is not None


def test_an_unchanged_calendar_costs_a_304_not_a_parse(world: World,
                                                       calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    world.sync(cid)
    second = world.sync(cid)
    assert second.status == "unchanged"
    assert calendar_http.requests[-1][1].get("If-None-Match")
    assert world.busy(cid) == [(day(1), day(1, 10))]


def test_a_changed_calendar_replaces_the_blocks(world: World, calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    world.sync(cid)
    calendar_http.add("/cal.ics", ics((day(3), day(3, 12), ""), (day(4), day(4, 10), "")))
    assert world.sync(cid).status == "ok"
    assert world.busy(cid) == [(day(3), day(3, 12)), (day(4), day(4, 10))]


def test_a_failure_keeps_the_last_good_blocks_and_alerts_once(world: World,
                                                               calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    world.sync(cid)
    calendar_http.add("/cal.ics", b"<html>maintenance</html>", status=503, etag=False)
    for attempt in range(1, 5):
        with world.services.sessions.begin() as s:  # due again at once, as the scheduler would be
            s.get(Connection, cid).lease_until = None
        outcome = world.sync(cid)
        assert outcome.status == "error"
        conn = world.connection(cid)
        assert conn.consecutive_failures == attempt
    assert "HTTP 503" in (conn.last_error or "") and "maintenance" not in (conn.last_error or "")
    assert world.busy(cid) == [(day(1), day(1, 10))]
    with world.services.sessions() as s:
        alerts = list(s.scalars(select(Alert).where(Alert.connection_id == cid)))
    assert len(alerts) == 1 and alerts[0].resolved_at is None  # one per episode, after 3 failures
    calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    assert world.sync(cid).status in ("ok", "unchanged")
    with world.services.sessions() as s:
        assert s.scalars(select(Alert)).one().resolved_at is not None


def test_an_empty_calendar_after_events_is_treated_as_a_glitch(world: World,
                                                                calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    world.sync(cid)
    calendar_http.add("/cal.ics", ics())
    assert world.sync(cid).status == "error"
    assert world.connection(cid).last_error_kind == "empty"
    assert world.busy(cid) == [(day(1), day(1, 10))]


def test_the_lease_keeps_two_workers_off_one_connection(world: World,
                                                         calendar_http: CalendarHTTPServer) -> None:
    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    with world.services.sessions.begin() as s:
        conn = s.get(Connection, cid)
        conn.lease_until = datetime.now(UTC) + timedelta(minutes=5)
        conn.lease_owner = "another-worker"
    assert world.sync(cid).status == "skipped"
    assert calendar_http.hits == {}
    with world.services.sessions.begin() as s:  # the other worker died: its lease expires
        s.get(Connection, cid).lease_until = datetime.now(UTC) - timedelta(seconds=1)
    assert world.sync(cid).status == "ok"
    assert world.connection(cid).lease_owner is None


def test_all_day_policy_and_treat_all_busy(world: World, calendar_http: CalendarHTTPServer) -> None:
    today = day_at(2, 0).date()
    body = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a@t\r\nDTSTAMP:20260101T000000Z\r\n"
            + f"DTSTART;VALUE=DATE:{today:%Y%m%d}\r\n".encode() + b"TRANSP:TRANSPARENT\r\n"
            + b"END:VEVENT\r\nEND:VCALENDAR\r\n")
    url = calendar_http.add("/allday.ics", body)
    ignore = world.connect(kind="ics", url=url, all_day="ignore", treat_all_busy=True)
    every = world.connect(kind="ics", url=url, all_day="busy", treat_all_busy=True)
    normal = world.connect(kind="ics", url=url)
    for cid in (ignore, every, normal):
        assert world.sync(cid).status == "ok"
    assert world.busy(ignore) == [] and world.busy(normal) == []
    assert len(world.busy(every)) == 1


# --- CalDAV, on both real servers -----------------------------------------------------------------


def test_caldav_busy_free_all_day_and_recurring_with_exception(world: World,
                                                               caldav_server: CalDAVServer) -> None:
    cal = caldav_server.calendar()
    cal.save_event(dtstart=day(1), dtend=day(1, 10), summary="Busy", uid="busy-1")
    cal.save_event(dtstart=day(1, 13), dtend=day(1, 14), summary="Free", uid="free-1", transp="TRANSPARENT")
    cal.save_event(ical=ics((day(2), day(2, 10), "RRULE:FREQ=DAILY;COUNT=3")).decode()
                   .replace("UID:ev0@test", "UID:series-1")
                   .replace("END:VEVENT", f"EXDATE:{day(3):%Y%m%dT%H%M%SZ}\r\nEND:VEVENT"))
    cid = world.connect(kind="caldav", url=caldav_server.url_of(), username=caldav_server.username,
                        password=caldav_server.password)
    assert world.sync(cid).status == "ok"
    assert world.busy(cid) == [(day(1), day(1, 10)), (day(2), day(2, 10)), (day(4), day(4, 10))]


def test_caldav_incremental_sync_sees_added_changed_and_deleted(world: World,
                                                                caldav_server: CalDAVServer) -> None:
    cal = caldav_server.calendar()
    cal.save_event(dtstart=day(1), dtend=day(1, 10), summary="One", uid="one")
    cal.save_event(dtstart=day(2), dtend=day(2, 10), summary="Two", uid="two")
    cid = world.connect(kind="caldav", url=caldav_server.url_of(), username=caldav_server.username,
                        password=caldav_server.password)
    world.sync(cid)
    assert world.busy(cid) == [(day(1), day(1, 10)), (day(2), day(2, 10))]
    cal.save_event(dtstart=day(5), dtend=day(5, 11), summary="Three", uid="three")  # added
    moved = cal.event_by_uid("one")
    moved.icalendar_component["DTSTART"].dt = day(6)
    moved.icalendar_component["DTEND"].dt = day(6, 10)
    moved.save()  # changed
    cal.event_by_uid("two").delete()  # deleted
    assert world.sync(cid).status == "ok"
    assert world.busy(cid) == [(day(5), day(5, 11)), (day(6), day(6, 10))]
    assert world.sync(cid).status in ("ok", "unchanged")
    assert world.connection(cid).busy_count == 2


def test_caldav_wrong_password_is_a_sentence(world: World, radicale: CalDAVServer) -> None:
    radicale.calendar()
    cid = world.connect(kind="caldav", url=radicale.url_of(), username=radicale.username,
                        password=radicale.password)
    with world.services.sessions.begin() as s:
        s.get(Connection, cid).password_sealed = world.services.vault.seal("wrong")
    outcome = world.sync(cid)
    assert outcome.status == "error"
    assert world.connection(cid).last_error_kind == "auth"
    assert "password" in (outcome.error or "")


def test_stale_connections_alert_and_the_policy_decides_booking(world: World, api,  # type: ignore[no-untyped-def]
                                                                 calendar_http: CalendarHTTPServer) -> None:
    from calsync.feeds.calendars.health import mark_stale

    url = calendar_http.add("/cal.ics", ics((day(1), day(1, 10), "")))
    cid = world.connect(kind="ics", url=url)
    world.sync(cid)
    with world.services.sessions.begin() as s:
        s.get(Connection, cid).last_success_at = datetime.now(UTC) - timedelta(hours=30)
    with world.services.sessions.begin() as s:
        assert mark_stale(s, datetime.now(UTC)) == 1
    assert world.connection(cid).status == "stale"
    with world.services.sessions() as s:
        assert s.scalars(select(Alert)).one().kind == "stale"
    # keep (default): the last busy times still block, other times are bookable
    slot = (day(2, 14).isoformat(), day(2, 15).isoformat())
    resp = api.book(world.staff_id, *slot)
    assert resp.status_code == 201, resp.get_json()
    api.patch("/settings", {"stale_policy": "block"})
    refused = api.book(world.staff_id, day(3, 14).isoformat(), day(3, 15).isoformat())
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert "can't be booked: the calendar '" in error and "' has not synced since " in error
