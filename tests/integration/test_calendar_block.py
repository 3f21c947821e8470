"""What a calendar that has never synced does to bookings (feeds.scheduling.calendar_block,
issue 15): it blocks booking the staff member while it is new, says why in one sentence, and
after the company's stale time the stale policy decides — so an admin is never stuck; its
failures while new are shown, not emailed, and the stale alert that follows is emailed once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.health import mark_stale
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.settings import Settings
from calsync.models import Alert, Connection, utcnow
from tests.conftest import Api
from tests.feed_helpers import iso
from tests.linked_helpers import at
from tests.mail_helpers import outbox
from tests.servers import CalendarHTTPServer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})  # the loopback servers


ALL_WEEK = {d: [["00:00", "24:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def _broken(app: Flask, api: Api, calendar_http: CalendarHTTPServer) -> tuple[dict, int]:
    zoe = api.make_staff(timezone="UTC", working_hours=ALL_WEEK)
    conn = api.post(f"/staff/{zoe['id']}/connections",
                    {"kind": "ics", "url": calendar_http.base_url + "/gone.ics", "name": "Work"}).get_json()
    for _ in range(4):
        with app.extensions["calsync"].sessions.begin() as s:
            s.get(Connection, conn["id"]).lease_until = None
        sync_connection(app.extensions["calsync"].sync, conn["id"])
    return zoe, conn["id"]


def _age(app: Flask, connection_id: int, hours: int) -> None:
    """As if the connection had been added `hours` ago."""
    with app.extensions["calsync"].sessions.begin() as s:
        s.get(Connection, connection_id).created_at = utcnow() - timedelta(hours=hours)


def test_a_new_calendar_that_never_synced_blocks_and_says_why_until_it_is_stale(
    app: Flask, api: Api, calendar_http: CalendarHTTPServer
) -> None:
    zoe, cid = _broken(app, api, calendar_http)
    slot = (iso(at(3, 10)), iso(at(3, 11)))
    refused = api.book(zoe["id"], *slot)
    assert refused.status_code == 409
    error = refused.get_json()["error"]
    assert error.startswith("Zoë Müller can't be booked: the calendar 'Work' has not synced since it "
                            "was added on ")
    assert "because the calendar was not found at that address" in error
    assert "Fix or remove it on Zoë Müller's staff page; from " in error
    assert "try again in a minute" not in error
    avail = api.get(f"/staff/{zoe['id']}/availability?start={iso(at(3, 0))}&end={iso(at(4, 0))}"
                    "&duration=60".replace("+", "%2B")).get_json()
    assert avail["slots"] == [] and avail["blocked"] == error
    # New: its failures opened an alert shown on the pages, but emailed nobody.
    with app.extensions["calsync"].sessions() as s:
        assert s.scalars(select(Alert.kind)).all() == ["failing"]
    assert [e for e in outbox(app) if e.kind == "alert"] == []

    # A day after it was added (stale_after_hours, 24 by default) it counts as stale, and the
    # default stale policy ("keep") books without it.
    _age(app, cid, 25)
    booked = api.book(zoe["id"], *slot)
    assert booked.status_code == 201, booked.get_json()
    with app.extensions["calsync"].sessions.begin() as s:
        assert mark_stale(s, utcnow()) == 1
    with app.extensions["calsync"].sessions() as s:
        assert s.get(Connection, cid).status == "stale"
        # Still one alert for the episode; but from now on it is no longer new, so the next
        # episode is emailed.
        assert len(s.scalars(select(Alert).where(Alert.resolved_at.is_(None))).all()) == 1


def test_with_the_block_policy_a_never_synced_calendar_blocks_until_fixed_or_removed(
    app: Flask, api: Api, calendar_http: CalendarHTTPServer
) -> None:
    api.patch("/settings", {"stale_policy": "block"})
    zoe, cid = _broken(app, api, calendar_http)
    _age(app, cid, 48)
    refused = api.book(zoe["id"], iso(at(3, 10)), iso(at(3, 11)))
    assert refused.status_code == 409
    assert "set Stale calendars to \"Keep the last known busy times\"" in refused.get_json()["error"]
    # The stale alert of a calendar that never synced is emailed (it is no longer new).
    with app.extensions["calsync"].sessions.begin() as s:
        for alert in s.scalars(select(Alert)):
            s.delete(alert)
    with app.extensions["calsync"].sessions.begin() as s:
        mark_stale(s, utcnow())
    alerts = [e for e in outbox(app) if e.kind == "alert"]
    assert alerts and all(e.subject.startswith("Calendar has not synced for a while") for e in alerts)
    # Removing it is always a way out.
    assert api.delete(f"/connections/{cid}").status_code in (200, 204)
    assert api.book(zoe["id"], iso(at(3, 10)), iso(at(3, 11))).status_code == 201
