"""A change notification that never arrives (issues 11/12): while a channel is live the
realtime poll slows to health.PUSHED_POLL_SECONDS, and that scheduled poll — not the
notification — brings the change. Both providers' fakes (tests/fakes/push.py) deliver to calsync
over HTTP; here the one delivery that matters is dropped on the provider's side."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from calsync.feeds.calendars.channels import ensure_channel
from calsync.feeds.calendars.health import PUSHED_POLL_SECONDS
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.jobs import due_connection_ids
from calsync.models import Connection, LinkedItem, utcnow
from tests.channel_helpers import add_provider_connection, clear_sync_request, live, sync_requested
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph, utc_text
from tests.feed_helpers import iso
from tests.linked_helpers import WEEK_NINE_TO_FIVE, at


def _href(app: Flask, appointment_id: int) -> str:
    with app.extensions["calsync"].sessions() as session:
        item = session.query(LinkedItem).filter_by(appointment_id=appointment_id).one()
        assert item.href is not None and item.state == "synced"
        return item.href


def _next_sync_at(app: Flask, conn_id: int) -> datetime:
    with app.extensions["calsync"].sessions() as session:
        conn = session.get(Connection, conn_id)
        assert conn is not None and conn.next_sync_at is not None
        return conn.next_sync_at.astimezone(UTC)


@pytest.mark.parametrize("kind", ["google", "microsoft"])
def test_a_dropped_notification_is_caught_by_the_scheduled_poll(
        app: Flask, api: Api, company_id: int, google: ServedFake, graph: ServedGraph, served: str,
        monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    services = app.extensions["calsync"]
    api.patch("/settings", {"bidirectional_sync": True})
    staff = api.make_staff(working_hours=WEEK_NINE_TO_FIVE, timezone="UTC")
    fake: Any = google.fake if kind == "google" else graph.fake
    conn_id = add_provider_connection(app, company_id, staff["id"], kind, fake.grant(),
                                      roles=("conflict", "linked"))
    assert sync_connection(services.sync, conn_id).status == "ok"
    assert ensure_channel(services.channels, conn_id) == "subscribed"
    [channel] = live(app, conn_id)
    booked = api.book(staff["id"], iso(at(2, 10)), iso(at(2, 11)))
    assert booked.status_code == 201, booked.get_json()
    appt = booked.get_json()
    assert sync_connection(services.sync, conn_id).status == "ok"  # the booking written
    href = _href(app, appt["id"])
    fake.deliverer.settle()  # the notifications of our own write
    clear_sync_request(app, channel.id)
    synced_at = utcnow()
    # The staff member moves the booking; the provider's notification of it is lost.
    if kind == "google":
        monkeypatch.setattr(fake, "notify", lambda *args, **kwargs: None)
        fake.patch_event("primary", href, {"start": {"dateTime": iso(at(3, 14))},
                                           "end": {"dateTime": iso(at(3, 15))}})
    else:
        monkeypatch.setattr(fake, "_changed", lambda *args, **kwargs: None)
        fake.patch_event(href, {"start": {"dateTime": utc_text(at(3, 14)), "timeZone": "UTC"},
                                "end": {"dateTime": utc_text(at(3, 15)), "timeZone": "UTC"}})
    fake.deliverer.settle()
    assert not sync_requested(app, channel.id)
    # The poll is slowed to PUSHED_POLL_SECONDS while the channel lives, but not switched off.
    due = _next_sync_at(app, conn_id)
    poll = timedelta(seconds=PUSHED_POLL_SECONDS)
    assert poll - timedelta(minutes=1) < due - synced_at <= poll
    assert conn_id not in due_connection_ids(services.sync, utcnow())
    assert conn_id in due_connection_ids(services.sync, due)
    # The scheduled sync (what the schedule_due task queues) brings the move.
    outcome = sync_connection(services.sync, conn_id, due_only=True, now=due + timedelta(seconds=1))
    assert outcome.status == "ok" and outcome.applied == 1
    got = api.get(f"/appointments/{appt['id']}").get_json()
    assert got["start"] == iso(at(3, 14)).replace("+00:00", "Z")
    changes = api.get(f"/appointments/{appt['id']}/history").get_json()["history"]
    assert (changes[-1]["action"], changes[-1]["source"]) == ("rescheduled", kind)
