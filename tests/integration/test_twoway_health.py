"""A calendar-side change two-way sync could not apply (our booking's event made unreadable in
the linked calendar) reaches the connection's health: the API and the admin's health page show
the sentence, the rest of the calendar still syncs, and nothing is cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.settings import Settings
from tests.admin_helpers import log_in, make_admin, text_of
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.servers import CalDAVServer

# Both servers take it (a valid local time in a zone the calendar defines); in UTC it is beyond
# the year 9999, which no calendar library can represent: two-way sync cannot read its time.
ZONE = ("BEGIN:VTIMEZONE\r\nTZID:Far West\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
        "TZOFFSETFROM:-1000\r\nTZOFFSETTO:-1000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
UNREADABLE_TIMES = ("DTSTART;TZID=Far West:99991231T230000\r\n"
                    "DTEND;TZID=Far West:99991231T233000\r\n")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


def test_an_unreadable_booking_in_the_linked_calendar_shows_in_the_health(
    app: Flask, api: Api, client: FlaskClient, caldav_server: CalDAVServer,
) -> None:
    make_admin(app)
    caldav_server.calendar("work", "Work")
    api.patch("/settings", {"bidirectional_sync": True})
    every_day = {d: [["00:00", "23:59"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    staff = api.make_staff(working_hours=every_day, timezone="UTC")
    resp = api.post(f"/staff/{staff['id']}/connections", {
        "kind": "caldav", "url": caldav_server.url_of("work"), "username": caldav_server.username,
        "password": caldav_server.password, "roles": ["conflict", "linked"], "sync_mode": "interval",
    })
    assert resp.status_code == 201, resp.get_json()
    conn_id = resp.get_json()["id"]
    ctx = app.extensions["calsync"].sync
    assert sync_connection(ctx, conn_id).status == "ok"
    # 10:00 two days ahead: inside 00:00-23:59 whatever the hour the test runs at (an hour taken
    # from the clock made it fail between 23:00 and 24:00 UTC).
    start = (datetime.now(UTC) + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
    booked = api.book(staff["id"], iso(start), iso(start + timedelta(hours=1)))
    assert booked.status_code == 201, booked.get_json()
    appt = booked.get_json()
    assert sync_connection(ctx, conn_id).status == "ok"  # our copy is in the calendar

    # The staff member's calendar app saves the event with times no one can read.
    event = caldav_server.client().calendar(url=caldav_server.url_of("work")).event_by_uid(appt["uid"])
    body = "".join(line + "\r\n" for line in str(event.data).splitlines()
                   if not line.startswith(("DTSTART", "DTEND")))
    body = body.replace("BEGIN:VEVENT", ZONE + "BEGIN:VEVENT")
    body = body.replace("END:VEVENT", UNREADABLE_TIMES + "END:VEVENT")
    saved = caldav_server.client().put(str(event.url), body, {"Content-Type": "text/calendar"})
    assert saved.status in (201, 204)

    outcome = sync_connection(ctx, conn_id)
    assert outcome.status == "ok"
    shown = api.get(f"/connections/{conn_id}").get_json()
    assert shown["status"] == "ok"
    assert shown["last_error"] == (
        "1 change(s) made in this calendar to bookings could not be applied. A booking in the "
        "linked calendar could not be read. Open the booking in the calendar and correct or "
        "delete it.")
    assert api.get(f"/appointments/{appt['id']}").get_json()["status"] != "cancelled"
    log_in(client)
    page = text_of(client.get("/health"))
    assert "1 change(s) made in this calendar to bookings could not be applied" in page
