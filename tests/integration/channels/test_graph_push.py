"""Microsoft Graph change notifications (issue 12): subscriptions made, validated, renewed and
re-created by calsync; notifications and lifecycle events delivered by the contract fake
(tests/fakes/push.py) to calsync over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from calsync.feeds.calendars.channels import ensure_channel, secret_hash
from calsync.feeds.calendars.sync import sync_connection
from calsync.models import Connection, LinkedItem, ProviderChannel, utcnow
from tests.channel_helpers import (
    BASE,
    Loopback,
    add_provider_connection,
    clear_sync_request,
    live,
    sync_requested,
    wait_for_reschedule,
)
from tests.conftest import Api
from tests.fakes.microsoft_graph import ServedGraph, utc_text
from tests.fakes.push import PushingGraphFake
from tests.feed_helpers import iso
from tests.linked_helpers import WEEK_NINE_TO_FIVE, at
from tests.waiting import wait_until


def _fake(graph: ServedGraph) -> PushingGraphFake:
    assert isinstance(graph.fake, PushingGraphFake)
    return graph.fake


def _subscribed(app: Flask, api: Api, company_id: int, graph: ServedGraph) -> tuple[int, ProviderChannel]:
    staff = api.make_staff()
    conn_id = add_provider_connection(app, company_id, staff["id"], "microsoft", graph.fake.grant())
    assert ensure_channel(app.extensions["calsync"].channels, conn_id) == "subscribed"
    [row] = live(app, conn_id)
    return conn_id, row


def test_the_subscription_is_made_after_the_validation_echo(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str) -> None:
    fake = _fake(graph)
    conn_id, row = _subscribed(app, api, company_id, graph)
    [sub] = fake.subscriptions.values()
    assert sub["notificationUrl"] == BASE + "/hooks/microsoft"
    assert sub["lifecycleNotificationUrl"] == BASE + "/hooks/microsoft/lifecycle"
    assert sub["resource"] == "me/events" and sub["changeType"] == "created,updated,deleted"
    # Both addresses answered the handshake: 200, text/plain, the token itself.
    assert [v.status for v in fake.validations] == [200, 200]
    assert all(v.content_type.startswith("text/plain") for v in fake.validations)
    assert row.channel_id == sub["id"] and row.secret_hash == secret_hash(sub["clientState"])
    assert sub["clientState"] not in row.secret_hash


def test_a_wrong_or_slow_echo_means_no_subscription_and_polling(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str, loopback: Loopback) -> None:
    fake = _fake(graph)
    staff = api.make_staff()
    conn_id = add_provider_connection(app, company_id, staff["id"], "microsoft", graph.fake.grant())
    channels = app.extensions["calsync"].channels
    fake.validation_timeout = 0.000_001  # calsync cannot answer in a microsecond
    assert ensure_channel(channels, conn_id) == "failed"
    fake.validation_timeout = 10.0
    real = loopback.url
    loopback.url = real + "/feeds/nothing-here"  # an address that does not echo the token
    assert ensure_channel(channels, conn_id) == "failed"
    assert fake.subscriptions == {} and live(app, conn_id) == []
    loopback.url = real
    assert ensure_channel(channels, conn_id) == "subscribed"  # the next periodic run succeeds


def test_single_batched_and_repeated_notifications_queue_one_sync(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str) -> None:
    fake = _fake(graph)
    conn_id, row = _subscribed(app, api, company_id, graph)
    now = utcnow()
    event = fake.put_event(now + timedelta(days=2), now + timedelta(days=2, hours=1))
    [single] = fake.deliverer.settle()
    assert single.status == 202
    assert sync_requested(app, row.id)
    clear_sync_request(app, row.id)
    # One batch with the same notification twice and another change: one sync.
    with fake.batching():
        fake.patch_event(event["id"], {"subject": "Dentist (moved)"})
        fake.put_event(now + timedelta(days=3), now + timedelta(days=3, hours=1))
    batch = fake.deliverer.settle()[-1]
    assert batch.status == 202
    assert sync_requested(app, row.id)
    clear_sync_request(app, row.id)
    # Graph retries a batch it thinks was not acknowledged: nothing new.
    fake.deliverer.post(batch.url, batch.headers, batch.body)
    assert fake.deliverer.settle()[-1].status == 202
    assert not sync_requested(app, row.id)
    # The same notification twice within one batch counts once.
    notification = {"subscriptionId": row.channel_id, "changeType": "updated", "clientState":
                    fake.subscriptions[row.channel_id]["clientState"], "resource": "Users/zoe/Events/x",
                    "resourceData": {"id": "x", "@odata.etag": 'W/"new"'}}
    fake.send_graph(BASE + "/hooks/microsoft", [notification, notification])
    fake.deliverer.settle()
    with app.extensions["calsync"].sessions() as session:
        stored = session.get(ProviderChannel, row.id)
        assert stored is not None and stored.sync_requested_at is not None
        assert len(stored.recent_keys) == len(set(stored.recent_keys)) == 4  # 1 + 2 (batch) + 1


def test_a_wrong_client_state_is_ignored(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str,
        caplog: pytest.LogCaptureFixture) -> None:
    fake = _fake(graph)
    conn_id, row = _subscribed(app, api, company_id, graph)
    fake.send_graph(BASE + "/hooks/microsoft", [{
        "subscriptionId": row.channel_id, "changeType": "updated", "clientState": "forged-state",
        "resource": "Users/zoe/Events/x", "resourceData": {"id": "x"}}])
    assert fake.deliverer.settle()[-1].status == 202  # acknowledged, and dropped
    assert not sync_requested(app, row.id)
    assert "wrong clientState" in caplog.text and "forged-state" not in caplog.text
    client = app.test_client()
    # Garbage is a 400 with a sentence, never a 500; the handshake is echoed as plain text.
    assert client.post("/hooks/microsoft", data=b"{not json").status_code == 400
    assert client.post("/hooks/microsoft", json={"value": "nope"}).status_code == 400
    echo = client.post("/hooks/microsoft?validationToken=%3Cb%3Ehi%3C%2Fb%3E")
    assert echo.status_code == 200 and echo.mimetype == "text/plain" and echo.text == "<b>hi</b>"


def test_renewal_extends_and_a_removed_subscription_is_made_anew(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str) -> None:
    fake = _fake(graph)
    channels = app.extensions["calsync"].channels
    conn_id, row = _subscribed(app, api, company_id, graph)
    later = utcnow() + timedelta(days=6, hours=12)
    fake.advance(6.5 * 86400)
    assert ensure_channel(channels, conn_id, now=later) == "renewed"
    [renewed] = live(app, conn_id)
    assert renewed.channel_id == row.channel_id and renewed.expires_at > row.expires_at
    assert [r["status"] for r in fake.requests_to("PATCH", "/subscriptions/")][-1] == 200
    # Graph dropped it (404 on PATCH): a new subscription, validated again.
    fake.subscriptions.clear()
    fake.advance(6.5 * 86400)
    assert ensure_channel(channels, conn_id, now=later + timedelta(days=6, hours=12)) == "renewed"
    [new] = live(app, conn_id)
    assert new.channel_id != row.channel_id and list(fake.subscriptions) == [new.channel_id]


@pytest.fixture
def consumer(app: Flask) -> Iterator[object]:
    worker = app.extensions["calsync"].jobs.start_in_background(workers=2, periodic=False)
    yield worker
    worker.stop(graceful=True)


def test_lifecycle_notifications(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str, consumer: object) -> None:
    fake = _fake(graph)
    conn_id, row = _subscribed(app, api, company_id, graph)
    # reauthorizationRequired → reauthorise (and extend) the same subscription.
    fake.lifecycle(row.channel_id, "reauthorizationRequired")
    assert fake.deliverer.settle()[-1].status == 202
    wait_until(lambda: any(r.get("status") == 204 for r in fake.requests_to("POST", "/reauthorize")),
               "the subscription reauthorised")
    wait_until(lambda: "reauthorize" not in fake.subscriptions[row.channel_id], "reauthorised at the fake")
    # missed → the next sync lists the calendar in full, although its deltaLink is still good.
    def token() -> str | None:
        with app.extensions["calsync"].sessions() as session:
            return session.scalar(select(Connection.sync_token).where(Connection.id == conn_id))
    assert sync_connection(app.extensions["calsync"].sync, conn_id).status == "ok"
    link = token()
    assert link and link.startswith(graph.url + "/v1.0/")  # a deltaLink Graph still knows
    before = len(fake.log)
    fake.lifecycle(row.channel_id, "missed")
    fake.deliverer.settle()

    def listings() -> list[dict[str, Any]]:
        return [r for r in fake.log[before:] if r["path"].endswith("/calendarView/delta") and "status" in r]
    wait_until(listings, "the sync the missed notification asked for")
    wait_until(lambda: token() is not None, "that sync's deltaLink stored")
    first = listings()[0]
    assert "$deltatoken" not in first["params"] and "startDateTime" in first["params"]  # in full
    # subscriptionRemoved → a new subscription.
    fake.lifecycle(row.channel_id, "subscriptionRemoved")
    fake.deliverer.settle()
    wait_until(lambda: [r.channel_id for r in live(app, conn_id)] == list(fake.subscriptions)
               and row.channel_id not in fake.subscriptions, "a new subscription")


def test_the_periodic_check_subscribes_once(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str, consumer: object) -> None:
    services = app.extensions["calsync"]
    staff = api.make_staff()
    conn_id = add_provider_connection(app, company_id, staff["id"], "microsoft", graph.fake.grant())
    assert services.jobs._check_channels() == 1  # what the periodic task does every minute
    wait_until(lambda: live(app, conn_id), "a subscription made by the queued job")
    assert services.jobs._check_channels() == 0  # nothing to do for almost a week
    assert len(_fake(graph).subscriptions) == 1
    # A connection whose consent is gone is left alone until it is reconnected.
    other = add_provider_connection(app, company_id, staff["id"], "microsoft", graph.fake.grant())
    with services.sessions.begin() as session:
        session.execute(update(Connection).where(Connection.id == other).values(
            status="error", last_error_kind="reconnect"))
    assert services.jobs._check_channels() == 0


def test_a_move_in_outlook_reschedules_through_a_notification(
        app: Flask, api: Api, company_id: int, graph: ServedGraph, served: str, consumer: object) -> None:
    """End to end: moved in Outlook → Graph notifies → the queued sync reschedules and the
    customer's email is queued; no periodic job runs (periodic=False)."""
    fake = _fake(graph)
    services = app.extensions["calsync"]
    api.patch("/settings", {"bidirectional_sync": True})
    staff = api.make_staff(working_hours=WEEK_NINE_TO_FIVE, timezone="UTC")
    conn_id = add_provider_connection(app, company_id, staff["id"], "microsoft", fake.grant(),
                                      roles=("conflict", "linked"))
    assert sync_connection(services.sync, conn_id).status == "ok"
    assert ensure_channel(services.channels, conn_id) == "subscribed"
    start = at(2, 10)
    booked = api.book(staff["id"], iso(start), iso(start + timedelta(hours=1)))
    assert booked.status_code == 201, booked.get_json()
    appt = booked.get_json()

    def our_event() -> dict[str, Any] | None:
        with fake.lock:
            return next((e for e in fake.mailbox.events.values() if any(
                p["value"] == appt["uid"] for p in e.get("singleValueExtendedProperties") or [])), None)

    event = wait_until(our_event, "the booking written into Outlook")
    wait_until(lambda: _linked_state(app, appt["id"]) == "synced", "the booking's copy synced")
    fake.deliverer.settle()
    moved = at(2, 14)
    fake.patch_event(str(event["id"]), {  # the staff member drags it in Outlook
        "start": {"dateTime": utc_text(moved), "timeZone": "UTC"},
        "end": {"dateTime": utc_text(moved + timedelta(hours=1)), "timeZone": "UTC"}})
    wait_for_reschedule(app, api, appt["id"], moved)
    assert all(d.status == 202 for d in fake.deliverer.settle())


def _linked_state(app: Flask, appointment_id: int) -> str | None:
    with app.extensions["calsync"].sessions() as session:
        return session.scalar(select(LinkedItem.state).where(LinkedItem.appointment_id == appointment_id))
