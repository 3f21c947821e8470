"""A Microsoft Graph reading covers the sync window only (calendarView/delta), so an event of
ours missing from it, or `@removed` with reason `changed`, may simply lie outside the window:
the sync never takes that for a deletion of the booking unless a read by id says 404. Through
the product's own paths (the real "Connect Outlook" flow, `sync_connection`) against the
contract fake of tests/fakes/microsoft_graph.py: the daily window roll and a shorter window,
a 410 resync and a `missed` lifecycle notification cancel nothing; an event moved out of the
window in Outlook is followed; a real deletion cancels (or restores) once, with history source
`microsoft` and one email to the customer. Google (whose listing is the whole calendar) keeps
its bookings across the roll as well."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.channels import handle_lifecycle
from calsync.feeds.calendars.sync import sync_connection
from calsync.models import Appointment, ChannelProvider, Connection, LinkedItem, ProviderChannel, utcnow
from tests import provider_two_way
from tests.admin_helpers import Browser
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph, utc_text
from tests.feed_helpers import iso
from tests.integration.test_provider_sync import (
    book,
    connect_outlook,
    customer_emails,
    history,
    item_of,
    live_google_events,
    ready,
    row,
    sync,
)
from tests.linked_helpers import at
from tests.provider_helpers import connect_google

# The two-way fixtures (both fakes configured, Zoë, her self-service browser).
settings, zoe, visitor = provider_two_way.settings, provider_two_way.zoe, provider_two_way.visitor


def sync_at(app: Flask, conn: Connection, when: datetime) -> Any:
    """A sync as the scheduler runs it at `when` (the window is computed from that day)."""
    return sync_connection(app.extensions["calsync"].sync, conn.id, now=when)


def status_of(app: Flask, appt_id: int) -> str:
    with app.extensions["calsync"].sessions() as s:
        appt = s.get(Appointment, appt_id)
        assert appt is not None
        return str(appt.status)


def event_reads(graph: ServedGraph, href: str | None) -> int:
    """GETs of one event by id (the confirmation reads)."""
    assert href is not None
    return len([r for r in graph.fake.requests_to("GET", "/events/") if r["path"].endswith(href)])


def move_in_outlook(graph: ServedGraph, href: str | None, start: datetime) -> None:
    assert href is not None
    graph.fake.patch_event(href, {"start": {"dateTime": utc_text(start), "timeZone": "UTC"},
                                  "end": {"dateTime": utc_text(start + timedelta(hours=1)),
                                          "timeZone": "UTC"}})


def z(moment: datetime) -> str:
    return iso(moment).replace("+00:00", "Z")


# --- the window moves ---------------------------------------------------------------------------


def test_the_daily_roll_keeps_a_past_booking_without_reading_it(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    past = book(api, zoe, at(1, 10))  # tomorrow: in the past three days from now
    coming = book(api, zoe, at(5, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, past["id"]).href
    later = utcnow() + timedelta(days=3)
    for days in (0, 1):  # the roll, and the next day's
        assert sync_at(app, conn, later + timedelta(days=days)).status == "ok"
    for appt in (past, coming):
        assert status_of(app, appt["id"]) == "confirmed"
        assert history(api, appt["id"]) == [("booked", "api")]
        assert customer_emails(app, appt["id"]) == ["booked"]
    assert href in graph.fake.mailbox.events
    assert event_reads(graph, href) == 0  # outside the window: its absence needs no read
    assert item_of(app, past["id"]).state == "synced"


def test_a_shorter_future_window_keeps_a_booking_beyond_it(app: Flask, api: Api, visitor: Browser,
                                                           zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, at(20, 10))
    assert sync(app, conn).status == "ok"
    api.patch("/settings", {"sync_window_future_days": 7})  # the window moves (a new window key)
    assert sync(app, conn).status == "ok"
    assert status_of(app, appt["id"]) == "confirmed"
    assert customer_emails(app, appt["id"]) == ["booked"]
    # Later, moved in Outlook while it is outside the window: the delta never mentions it, and
    # nothing is cancelled; back to a long window, the listing finds it and the move is applied.
    move_in_outlook(graph, item_of(app, appt["id"]).href, at(21, 11))
    assert sync(app, conn).status in ("ok", "unchanged")
    assert status_of(app, appt["id"]) == "confirmed"
    api.patch("/settings", {"sync_window_future_days": 180})
    assert sync(app, conn).status == "ok"
    assert api.get(f"/appointments/{appt['id']}").get_json()["start"] == z(at(21, 11))
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "microsoft")]


# --- moved out of the window in Outlook ---------------------------------------------------------


def test_an_event_moved_out_of_the_window_is_followed_not_cancelled(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    far = at(200, 10)  # beyond the 180 days ahead: delta reports @removed, reason "changed"
    move_in_outlook(graph, href, far)
    before = len(graph.fake.log)
    assert sync(app, conn).status == "ok"
    removed = [r for r in graph.fake.log[before:] if "delta" in r["path"]]
    assert removed and all(r["status"] == 200 for r in removed)
    assert event_reads(graph, href) >= 1  # confirmed by id
    assert status_of(app, appt["id"]) == "confirmed"
    assert api.get(f"/appointments/{appt['id']}").get_json()["start"] == z(far)
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "microsoft")]
    assert customer_emails(app, appt["id"]) == ["booked", "rescheduled"]
    assert href in graph.fake.mailbox.events and len(graph.fake.mailbox.events) == 1
    # The following syncs leave it alone: outside the window, not read again.
    reads = event_reads(graph, href)
    assert sync(app, conn).status in ("ok", "unchanged")
    assert sync_at(app, conn, utcnow() + timedelta(days=1)).status == "ok"
    assert event_reads(graph, href) == reads
    assert status_of(app, appt["id"]) == "confirmed"
    assert customer_emails(app, appt["id"]) == ["booked", "rescheduled"]


# --- real deletions -------------------------------------------------------------------------------


def test_a_deletion_in_outlook_cancels_once_with_source_microsoft(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, at(2, 10))
    keep = book(api, zoe, at(3, 10))  # one of two: not a mass deletion
    assert sync(app, conn).status == "ok"
    graph.fake.delete_event(item_of(app, appt["id"]).href or "")  # delta: @removed, reason "deleted"
    assert sync(app, conn).status == "ok"
    assert status_of(app, appt["id"]) == "cancelled"
    assert history(api, appt["id"]) == [("booked", "api"), ("cancelled", "microsoft")]
    assert customer_emails(app, appt["id"]) == ["booked", "cancelled"]
    sync(app, conn)
    sync_at(app, conn, utcnow() + timedelta(days=1))  # a window move lists in full again
    assert customer_emails(app, appt["id"]) == ["booked", "cancelled"]  # once
    assert status_of(app, keep["id"]) == "confirmed"


def test_a_deletion_while_the_delta_token_was_lost_is_confirmed_by_id(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    gone, kept = book(api, zoe, at(2, 10)), book(api, zoe, at(4, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, gone["id"]).href
    graph.fake.delete_event(href or "")
    graph.fake.expire_delta_tokens()  # 410: the full listing no longer has it
    assert sync(app, conn).status == "ok"
    assert event_reads(graph, href) == 1  # the 404 that confirms it
    assert status_of(app, gone["id"]) == "cancelled"
    assert history(api, gone["id"]) == [("booked", "api"), ("cancelled", "microsoft")]
    assert customer_emails(app, gone["id"]) == ["booked", "cancelled"]
    assert status_of(app, kept["id"]) == "confirmed"


def test_the_restore_policy_puts_an_event_deleted_in_outlook_back(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    api.patch("/settings", {"calendar_delete_action": "restore"})
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, at(2, 10))
    book(api, zoe, at(3, 10))
    assert sync(app, conn).status == "ok"
    old = item_of(app, appt["id"]).href
    graph.fake.delete_event(old or "")
    assert sync(app, conn).status == "ok"
    assert status_of(app, appt["id"]) == "confirmed"
    assert customer_emails(app, appt["id"]) == ["booked"]
    new = item_of(app, appt["id"]).href
    assert new and new != old and new in graph.fake.mailbox.events
    assert len(graph.fake.mailbox.events) == 2


# --- full resyncs -------------------------------------------------------------------------------


def test_a_410_resync_cancels_nothing_and_follows_a_move_made_meanwhile(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    past, inside, moved = book(api, zoe, at(1, 10)), book(api, zoe, at(5, 10)), book(api, zoe, at(6, 10))
    assert sync(app, conn).status == "ok"
    later = utcnow() + timedelta(days=3)
    assert sync_at(app, conn, later).status == "ok"  # `past` is outside the window now
    far = at(300, 9)
    move_in_outlook(graph, item_of(app, moved["id"]).href, far)  # out of the window ...
    graph.fake.expire_delta_tokens()  # ... while the delta token was lost
    before = len(graph.fake.log)
    assert sync_at(app, conn, later).status == "ok"
    assert [r["status"] for r in graph.fake.log[before:] if "delta" in r["path"]] == [410, 200]
    for appt in (past, inside, moved):
        assert status_of(app, appt["id"]) == "confirmed"
        assert "cancelled" not in customer_emails(app, appt["id"])
    assert event_reads(graph, item_of(app, past["id"]).href) == 0
    assert api.get(f"/appointments/{moved['id']}").get_json()["start"] == z(far)
    assert history(api, moved["id"]) == [("booked", "api"), ("rescheduled", "microsoft")]
    assert len(graph.fake.mailbox.events) == 3  # no duplicates


def test_a_missed_lifecycle_notification_resyncs_without_cancelling(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    past, coming = book(api, zoe, at(1, 10)), book(api, zoe, at(5, 10))
    assert sync(app, conn).status == "ok"
    later = utcnow() + timedelta(days=3)
    assert sync_at(app, conn, later).status == "ok"
    services = app.extensions["calsync"]
    with services.sessions.begin() as s:
        channel = ProviderChannel(company_id=conn.company_id, connection_id=conn.id,
                                  provider=ChannelProvider.MICROSOFT, channel_id="sub-1", secret_hash="x",
                                  expires_at=utcnow() + timedelta(days=2), created_at=utcnow(),
                                  recent_keys=[], extra={})
        s.add(channel)
        s.flush()
        channel_id = channel.id
    assert handle_lifecycle(services.channels, channel_id, "missed") == "missed"
    assert row(app, conn).sync_token is None  # the next sync lists in full
    assert sync_at(app, conn, later).status == "ok"
    for appt in (past, coming):
        assert status_of(app, appt["id"]) == "confirmed"
        assert customer_emails(app, appt["id"]) == ["booked"]


# --- the store itself ---------------------------------------------------------------------------


def test_the_store_tells_moved_out_of_the_window_from_deleted(graph: ServedGraph) -> None:
    from tests.fakes.microsoft_graph import open_fake_graph_store

    window = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC))
    fake = graph.fake
    a = fake.put_event(datetime(2027, 1, 4, 9, tzinfo=UTC), datetime(2027, 1, 4, 10, tzinfo=UTC))["id"]
    b = fake.put_event(datetime(2027, 1, 5, 9, tzinfo=UTC), datetime(2027, 1, 5, 10, tzinfo=UTC))["id"]
    with open_fake_graph_store(graph, window=window) as store:
        listing = store.list()
        assert listing.window == window
        fake.patch_event(a, {"start": {"dateTime": "2028-03-01T08:00:00.0000000", "timeZone": "UTC"},
                             "end": {"dateTime": "2028-03-01T09:00:00.0000000", "timeZone": "UTC"}})
        fake.delete_event(b)
        changes = store.changes_since(listing.token or "")
    assert changes.deleted == {a, b}  # both gone from the view (busy time)
    assert changes.left == {a}  # only b was deleted


# --- Google: its listing is the whole calendar ------------------------------------------------------


def test_google_keeps_a_past_booking_across_the_roll(app: Flask, api: Api, visitor: Browser,
                                                     zoe: dict[str, Any], google: ServedFake) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(1, 10))
    assert sync(app, conn).status == "ok"
    assert sync_at(app, conn, utcnow() + timedelta(days=3)).status == "ok"
    assert status_of(app, appt["id"]) == "confirmed"
    assert customer_emails(app, appt["id"]) == ["booked"]
    assert len(live_google_events(google)) == 1
    with app.extensions["calsync"].sessions() as s:
        assert s.scalar(select(LinkedItem.state).where(LinkedItem.appointment_id == appt["id"])) == "synced"


def test_a_window_move_reads_other_events_from_the_listing_itself(
        app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    for day in range(2, 7):
        graph.fake.put_event(at(day, 13), at(day, 14),
                             body={"contentType": "html", "content": "<p>Agenda</p>" * 500})
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    before = len(graph.fake.log)
    outcome = sync_at(app, conn, utcnow() + timedelta(days=1))  # a window move: every event loaded
    assert outcome.status == "ok" and outcome.busy_count == 5
    asked = graph.fake.log[before:]
    reads = [r for r in asked if r["method"] == "GET" and "/events/" in r["path"]]
    assert [r["path"].rsplit("/", 1)[-1] for r in reads] == [item_of(app, appt["id"]).href]  # ours only
    assert status_of(app, appt["id"]) == "confirmed"


def test_the_roll_may_leave_the_window_empty(app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any],
                                             graph: ServedGraph) -> None:
    conn = connect_outlook(app, visitor, zoe, linked=None)
    graph.fake.put_event(at(0, 8), at(0, 9))  # today: outside the window two days from now
    assert sync(app, conn).busy_count == 1
    later = utcnow() + timedelta(days=3)
    outcome = sync_at(app, conn, later)
    assert outcome.status == "ok" and outcome.busy_count == 0, outcome.error
    assert sync_at(app, conn, later).status in ("ok", "unchanged")
