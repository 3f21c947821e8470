"""Google push notifications (issue 11): channels opened, renewed and stopped by calsync, and
notifications delivered by the contract fake (tests/fakes/push.py) to calsync over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from calsync.feeds.calendars.channels import connections_to_check, ensure_channel, secret_hash
from calsync.feeds.calendars.health import PUSHED_POLL_SECONDS, REALTIME_SECONDS, next_sync
from calsync.feeds.calendars.provider_connect import disconnect
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.settings import Settings
from calsync.models import Connection, LinkedItem, utcnow
from calsync.web.app import create_app
from tests.admin_helpers import log_in, make_admin
from tests.channel_helpers import (
    BASE,
    add_provider_connection,
    channels_of,
    clear_sync_request,
    live,
    sync_requested,
    wait_for_reschedule,
)
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.feed_helpers import iso
from tests.linked_helpers import WEEK_NINE_TO_FIVE, at
from tests.waiting import wait_until

WEEK = 7 * 86400


def _connect(app: Flask, api: Api, company_id: int, google: ServedFake, **kw: object) -> int:
    staff = api.make_staff()
    return add_provider_connection(app, company_id, staff["id"], "google", google.fake.grant(), **kw)  # type: ignore[arg-type]


def test_a_realtime_connection_gets_a_channel_whose_sync_message_is_ignored(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str) -> None:
    conn_id = _connect(app, api, company_id, google)
    assert ensure_channel(app.extensions["calsync"].channels, conn_id) == "subscribed"
    [row] = live(app, conn_id)
    [channel] = google.fake.channels.values()
    assert channel["address"] == BASE + "/hooks/google"  # only the https base is registered
    assert channel["id"] == row.channel_id and channel["resourceId"] == row.resource_id
    # The token is a secret: stored as its hash only.
    assert row.secret_hash == secret_hash(channel["token"]) and channel["token"] not in row.secret_hash
    [sync_message] = google.fake.deliverer.settle()
    assert sync_message.headers["X-Goog-Resource-State"] == "sync" and sync_message.status == 204
    assert not sync_requested(app, row.id)  # "the channel is open": nothing to sync
    # While the channel lives, the poll only catches missed notifications.
    with app.extensions["calsync"].sessions() as session:
        conn = session.get(Connection, conn_id)
        assert conn is not None
        now = utcnow()
        assert next_sync(conn, now) == now + timedelta(seconds=PUSHED_POLL_SECONDS)
    # Nothing more to do until it nears its expiry.
    assert ensure_channel(app.extensions["calsync"].channels, conn_id) == "kept"


def test_a_change_queues_one_sync_and_a_repeated_message_is_ignored(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str) -> None:
    conn_id = _connect(app, api, company_id, google)
    ensure_channel(app.extensions["calsync"].channels, conn_id)
    [row] = live(app, conn_id)
    channel_id = row.channel_id
    google.fake.put_event("primary", {"start": {"dateTime": "2027-01-04T10:00:00Z"},
                                      "end": {"dateTime": "2027-01-04T11:00:00Z"}, "summary": "Dentist"})
    deliveries = google.fake.deliverer.settle()
    assert [d.headers["X-Goog-Resource-State"] for d in deliveries] == ["sync", "exists"]
    assert deliveries[-1].status == 204
    assert sync_requested(app, row.id)
    assert channels_of(app, conn_id)[0].last_message_number == 2
    clear_sync_request(app, row.id)
    # Google delivers message 2 again (it did not see our answer): nothing new is queued.
    google.fake.notify(channel_id, "exists", number=2)
    assert google.fake.deliverer.settle()[-1].status == 204
    assert not sync_requested(app, row.id)
    # The next message is a new change.
    google.fake.notify(channel_id, "exists")
    google.fake.deliverer.settle()
    assert sync_requested(app, row.id)


def test_unknown_channels_get_404_and_wrong_tokens_403(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str,
        caplog: pytest.LogCaptureFixture) -> None:
    conn_id = _connect(app, api, company_id, google)
    ensure_channel(app.extensions["calsync"].channels, conn_id)
    [row] = live(app, conn_id)
    google.fake.notify(row.channel_id, "exists", token="not-the-token")
    assert google.fake.deliverer.settle()[-1].status == 403
    assert not sync_requested(app, row.id)
    assert "not-the-token" not in caplog.text  # nothing secret in the log
    client = app.test_client()
    answer = client.post("/hooks/google", headers={
        "X-Goog-Channel-ID": "no-such-channel", "X-Goog-Channel-Token": "x",
        "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "5"})
    assert answer.status_code == 404  # Google stops such a channel
    # Garbage never gives a 500.
    assert client.post("/hooks/google").status_code == 404
    assert client.post("/hooks/google", data=b"x" * 20_000).status_code == 413


def test_renewal_before_expiry_watches_anew_and_stops_the_old_channel(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str) -> None:
    channels = app.extensions["calsync"].channels
    conn_id = _connect(app, api, company_id, google)
    ensure_channel(channels, conn_id)
    [old] = live(app, conn_id)
    later = utcnow() + timedelta(days=6, hours=12)  # the channel lives a week; renewed a day ahead
    google.fake.advance(6.5 * 86400)
    with app.extensions["calsync"].sessions() as session:
        assert conn_id in connections_to_check(session, channels.base_url, later)
    assert ensure_channel(channels, conn_id, now=later) == "renewed"
    [new] = live(app, conn_id)
    assert new.channel_id != old.channel_id and new.expires_at > old.expires_at
    assert google.fake.live_channels() == [new.channel_id]  # the old one was stopped at Google
    # (The access token expired meanwhile: refused once with 401, refreshed, repeated.)
    answered = [r for r in google.fake.log if r["method"] == "POST" and r.get("status", 401) < 400]
    [stop] = [r for r in answered if r["path"].endswith("/channels/stop")]
    assert stop["body"] == {"id": old.channel_id, "resourceId": old.resource_id}
    # The watch came before the stop: no moment without a channel.
    order = [r["path"].rsplit("/", 1)[-1] for r in answered]
    assert order == ["watch", "watch", "stop"]
    # A late message on the old channel is refused, so Google drops it.
    assert app.test_client().post("/hooks/google", headers={
        "X-Goog-Channel-ID": old.channel_id, "X-Goog-Channel-Token": "whatever",
        "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "9"}).status_code in (403, 404)


def test_leaving_realtime_mode_stops_the_channel(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str) -> None:
    channels = app.extensions["calsync"].channels
    conn_id = _connect(app, api, company_id, google)
    ensure_channel(channels, conn_id)
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(update(Connection).where(Connection.id == conn_id).values(sync_mode="interval"))
    with app.extensions["calsync"].sessions() as session:
        assert connections_to_check(session, channels.base_url, utcnow()) == [conn_id]
    assert ensure_channel(channels, conn_id) == "stopped"
    assert live(app, conn_id) == [] and google.fake.live_channels() == []


def test_disconnecting_stops_the_channel_before_the_tokens_are_revoked(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str) -> None:
    services = app.extensions["calsync"]
    conn_id = _connect(app, api, company_id, google)
    ensure_channel(services.channels, conn_id)
    assert len(google.fake.live_channels()) == 1
    disconnect(services.sessions, services.vault, services.sync.providers, conn_id, remove_events=False)
    assert google.fake.live_channels() == []
    posts = [r["path"].rsplit("/", 1)[-1] for r in google.fake.log if r["method"] == "POST"]
    assert posts[-1] == "stop"
    assert channels_of(app, conn_id) == []  # gone with the connection


def test_without_an_https_base_url_realtime_polls_every_minute(
        settings: Settings, api: Api, company_id: int, app: Flask, google: ServedFake) -> None:
    http_app = create_app(settings.model_copy(update={"base_url": "http://cal.example.test"}), migrate=False)
    http_app.config["TESTING"] = True
    try:
        channels = http_app.extensions["calsync"].channels
        conn_id = _connect(app, api, company_id, google)
        with http_app.extensions["calsync"].sessions() as session:
            assert connections_to_check(session, channels.base_url, utcnow()) == []
        assert ensure_channel(channels, conn_id) == "none"
        assert google.fake.channels == {}
        with http_app.extensions["calsync"].sessions() as session:
            conn = session.get(Connection, conn_id)
            assert conn is not None
            now = utcnow()
            assert next_sync(conn, now) == now + timedelta(seconds=REALTIME_SECONDS)
        # The connection's page says so, in one sentence.
        make_admin(http_app)
        client = http_app.test_client()
        log_in(client)
        page = client.get(f"/staff/{conn.staff_id}").get_data(as_text=True)
        assert "Change notifications need calsync on an https address (CALSYNC_BASE_URL), so this " \
               "calendar is checked about every minute instead." in page
        https_client = app.test_client()
        log_in(https_client)
        https_page = https_client.get(f"/staff/{conn.staff_id}").get_data(as_text=True)
        assert "as soon as it changes" in https_page and "Change notifications need" not in https_page
    finally:
        http_app.extensions["calsync"].engine.dispose()


@pytest.fixture
def consumer(app: Flask) -> Iterator[object]:
    worker = app.extensions["calsync"].jobs.start_in_background(workers=2, periodic=False)
    yield worker
    worker.stop(graceful=True)


def _booked_with_its_copy(app: Flask, api: Api, company_id: int, google: ServedFake,
                          ) -> tuple[int, dict[str, Any], dict[str, object]]:
    """Two-way on, a staff member with a linked Google calendar and a live channel, and a booking
    whose copy the queue has written there: (connection id, appointment, its Google event)."""
    services = app.extensions["calsync"]
    api.patch("/settings", {"bidirectional_sync": True})
    staff = api.make_staff(working_hours=WEEK_NINE_TO_FIVE, timezone="UTC")
    conn_id = add_provider_connection(app, company_id, staff["id"], "google", google.fake.grant(),
                                      roles=("conflict", "linked"))
    assert sync_connection(services.sync, conn_id).status == "ok"
    assert ensure_channel(services.channels, conn_id) == "subscribed"
    start = at(2, 10)
    booked = api.book(staff["id"], iso(start), iso(start + timedelta(hours=1)))
    assert booked.status_code == 201, booked.get_json()
    appt = booked.get_json()

    def our_event() -> dict[str, object] | None:
        with google.fake.lock:
            return next((e for e in google.fake.calendars["primary"].events.values()
                         if e["status"] != "cancelled" and appt["uid"] in str(e.get("iCalUID", ""))), None)

    event = wait_until(our_event, "the booking written into Google")
    wait_until(lambda: _linked_state(app, appt["id"]) == "synced", "the booking's copy synced")
    google.fake.deliverer.settle()
    return conn_id, appt, event


def _drag(google: ServedFake, event: dict[str, object], hour: int) -> datetime:
    """The staff member drags the event in Google to `hour` on the same day; the new start."""
    moved = at(2, hour)
    google.fake.patch_event("primary", str(event["id"]), {
        "start": {"dateTime": iso(moved)}, "end": {"dateTime": iso(moved + timedelta(hours=1))}})
    return moved


def test_a_move_in_google_reschedules_through_a_notification(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str, consumer: object) -> None:
    """End to end: the event is moved in Google → Google notifies calsync → the queued sync
    applies the move → the appointment is rescheduled and the customer's email is queued. No
    periodic job runs here (periodic=False): only the notification can bring the change."""
    _, appt, event = _booked_with_its_copy(app, api, company_id, google)
    moved = _drag(google, event, 14)
    wait_for_reschedule(app, api, appt["id"], moved)
    assert [d.status for d in google.fake.deliverer.settle()] == [204] * len(google.fake.deliverer.sent)


def test_a_change_notified_while_another_sync_holds_the_connection_is_applied_after_it(
        app: Flask, api: Api, company_id: int, google: ServedFake, served: str, consumer: object) -> None:
    """The notified sync finds the connection leased by another sync (the one writing the
    booking's copy, say), which may have read the calendar before the change: it tries again
    a moment later, so the change arrives without waiting for a scheduler run (none runs here)."""
    services = app.extensions["calsync"]
    conn_id, appt, event = _booked_with_its_copy(app, api, company_id, google)

    def lease(owner: str | None, seconds: int) -> None:
        with services.sessions.begin() as session:
            session.execute(update(Connection).where(Connection.id == conn_id).values(
                lease_owner=owner, lease_until=utcnow() + timedelta(seconds=seconds) if owner else None,
                next_sync_at=utcnow() + timedelta(hours=1)))

    def made_due() -> bool:  # what a skipped notified sync does
        with services.sessions() as session:
            conn = session.get(Connection, conn_id)
            return conn is not None and conn.next_sync_at is not None and conn.next_sync_at <= utcnow()

    lease("another-worker", 600)
    moved = _drag(google, event, 14)
    wait_until(made_due, "the notified sync to find the connection held")
    lease(None, 0)  # the other sync is done
    wait_for_reschedule(app, api, appt["id"], moved)


def _linked_state(app: Flask, appointment_id: int) -> str | None:
    with app.extensions["calsync"].sessions() as session:
        return session.scalar(select(LinkedItem.state).where(LinkedItem.appointment_id == appointment_id))

