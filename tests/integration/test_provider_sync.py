"""Google and Microsoft connections in the sync (feeds.calendars.sync through
feeds.calendars.provider_access) against the contract fakes, connected through the real
"Connect" flow: busy time, two-way moves applied with the customer emailed (history source
google / microsoft), a change token the provider forgot (410) resynced without duplicates,
consent gone (invalid_grant) → error, one alert, writes kept until reconnected, throttling
honoured, and disconnecting with revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import func, select

from calsync.feeds.calendars.provider_access import open_tokens
from calsync.feeds.calendars.sync import sync_connection
from calsync.models import Alert, Appointment, Connection, LinkedItem, OutboxEmail
from tests import provider_two_way
from tests.admin_helpers import Browser
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph, utc_text
from tests.feed_helpers import iso
from tests.linked_helpers import at
from tests.provider_helpers import (
    connect,
    connect_google,
    connected,
    consent,
    start,
)

# The two-way fixtures (both fakes configured, Zoë, her self-service browser).
settings, zoe, visitor = provider_two_way.settings, provider_two_way.zoe, provider_two_way.visitor


def sync(app: Flask, conn: Connection) -> Any:
    return sync_connection(app.extensions["calsync"].sync, conn.id)


def ready(app: Flask, conn: Connection) -> Connection:
    """Synced once, as a new connection must be before its staff member can be booked."""
    assert sync(app, conn).status == "ok"
    return conn


def row(app: Flask, conn: Connection) -> Connection:
    with app.extensions["calsync"].sessions() as s:
        found = s.get(Connection, conn.id)
        assert found is not None
        return found


def book(api: Api, zoe: dict[str, Any], start_at: datetime) -> dict[str, Any]:
    resp = api.book(zoe["id"], iso(start_at), iso(start_at + timedelta(hours=1)))
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def item_of(app: Flask, appt_id: int) -> LinkedItem:
    with app.extensions["calsync"].sessions() as s:
        item = s.scalar(select(LinkedItem).where(LinkedItem.appointment_id == appt_id))
        assert item is not None
        return item


def history(api: Api, appt_id: int) -> list[tuple[str, str]]:
    changes = api.get(f"/appointments/{appt_id}/history").get_json()["history"]
    return [(h["action"], h["source"]) for h in changes]


def customer_emails(app: Flask, appt_id: int) -> list[str]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(OutboxEmail.kind).where(OutboxEmail.appointment_id == appt_id)
                              .order_by(OutboxEmail.id)))


def alerts(app: Flask, conn: Connection) -> int:
    with app.extensions["calsync"].sessions() as s:
        return s.scalar(select(func.count()).select_from(Alert).where(Alert.connection_id == conn.id)) or 0


def google_time(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(UTC).isoformat().replace("+00:00", "Z")}


def live_google_events(served: ServedFake) -> list[dict[str, Any]]:
    return [e for e in served.fake.calendars["primary"].events.values() if e.get("status") != "cancelled"]


# --- Google -----------------------------------------------------------------------------------


def test_google_busy_time_from_a_conflict_calendar(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                                   google: ServedFake) -> None:
    conn = connect_google(app, visitor, zoe["id"], linked=None)
    google.fake.put_event("primary", {"summary": "Dentist", "start": google_time(at(2, 10)),
                                      "end": google_time(at(2, 11))})
    google.fake.put_event("primary", {"summary": "Maybe", "transparency": "transparent",
                                      "start": google_time(at(2, 13)), "end": google_time(at(2, 14))})
    google.fake.put_event("primary", {"summary": "Declined", "start": google_time(at(2, 15)),
                                      "end": google_time(at(2, 16)),
                                      "attendees": [{"email": "zoe@example.com", "self": True,
                                                     "responseStatus": "declined"}]})
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 1
    assert row(app, conn).sync_token  # the syncToken of the last page, for the next incremental read
    google.fake.put_event("primary", {"summary": "Gym", "start": google_time(at(3, 8)),
                                      "end": google_time(at(3, 9))})
    before = len(google.fake.requests_to("GET", "/events"))
    assert sync(app, conn).busy_count == 2
    listed = google.fake.requests_to("GET", "/events")[before:]
    assert listed and all("syncToken" in r["params"] for r in listed if r["path"].endswith("/events"))


def test_google_two_way_move_reschedules_and_emails_the_customer(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    item = item_of(app, appt["id"])
    assert item.href and google.fake.calendars["primary"].events[item.href]["extendedProperties"]
    google.fake.patch_event("primary", item.href,
                            {"start": google_time(at(3, 14)), "end": google_time(at(3, 15))})
    assert sync(app, conn).status == "ok"
    moved = api.get(f"/appointments/{appt['id']}").get_json()
    assert moved["start"] == iso(at(3, 14)).replace("+00:00", "Z") and moved["status"] == "confirmed"
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "google")]
    assert customer_emails(app, appt["id"]) == ["booked", "rescheduled"]
    assert len(live_google_events(google)) == 1


def test_google_forgotten_sync_token_resyncs_once_without_duplicates(app: Flask, api: Api, visitor: Browser,
                                                                     zoe: dict[str, Any], google: ServedFake
                                                                     ) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    sync(app, conn)
    sync(app, conn)  # the create cleared the token (push_pass); this one stores a fresh one
    google.fake.put_event("primary", {"summary": "Dentist", "start": google_time(at(4, 10)),
                                      "end": google_time(at(4, 11))})
    google.fake.expire_sync_tokens()
    before = len(google.fake.log)
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 1
    statuses = [r.get("status") for r in google.fake.log[before:]]
    assert statuses.count(410) == 1  # one refused token, then one full listing
    assert len(live_google_events(google)) == 2  # ours and the dentist: nothing written twice
    assert api.get(f"/appointments/{appt['id']}").get_json()["status"] == "confirmed"
    assert history(api, appt["id"]) == [("booked", "api")]
    assert not google.fake.requests_to("POST", "/events")[1:]  # one insert ever


def test_google_consent_gone_alerts_once_and_keeps_the_writes(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    sync(app, conn)
    google.fake.revoke_consent()  # the person removed calsync in their Google Account
    appt = book(api, zoe, at(2, 10))
    outcome = sync(app, conn)
    assert outcome.status == "error"
    failed = row(app, conn)
    assert failed.status == "error" and failed.last_error_kind == "reconnect"
    assert "connect Google Calendar again" in (failed.last_error or "")
    assert alerts(app, conn) == 1
    sync(app, conn)
    assert alerts(app, conn) == 1  # one alert for the episode, not one per sync
    kept = item_of(app, appt["id"])
    assert kept.href is None and kept.state == "pending"  # the write waits
    # Connecting again gives the connection new tokens; the waiting booking is written.
    pick = visitor.get(consent(start(visitor, "google")))
    assert connect(visitor, "google", pick, staff_id=zoe["id"], linked=0).status_code == 303
    assert [c.id for c in connected(app, zoe["id"])] == [conn.id]  # the same connection, not a second
    assert sync(app, conn).status == "ok"
    assert item_of(app, appt["id"]).href in google.fake.calendars["primary"].events
    with app.extensions["calsync"].sessions() as s:
        assert s.scalar(select(func.count()).select_from(Alert).where(Alert.resolved_at.is_(None))) == 0


def test_an_expired_access_token_is_refreshed_once_and_stored(
    app: Flask, visitor: Browser, zoe: dict[str, Any], google: ServedFake, graph: ServedGraph,
) -> None:
    services = app.extensions["calsync"]
    for conn, fake in ((connect_google(app, visitor, zoe["id"], linked=None), google.fake),
                       (connect_outlook(app, visitor, zoe, linked=None), graph.fake)):
        before = row(app, conn).tokens_sealed
        fake.expire_access_tokens()  # revoked early, or the clock ran past its expiry
        assert sync(app, conn).status == "ok"
        stored = open_tokens(services.vault, row(app, conn).tokens_sealed or "", "test")
        assert row(app, conn).tokens_sealed != before and stored.access_token in fake.access
        assert [r["status"] for r in fake.log if r.get("status") == 401] == [401]  # refreshed once
        fake.log.clear()


def test_google_throttling_waits_for_retry_after(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                                 google: ServedFake) -> None:
    conn = connect_google(app, visitor, zoe["id"], linked=None)
    google.fake.fail_next(429, retry_after="3600", times=5)
    started = datetime.now(UTC)
    outcome = sync(app, conn)
    assert outcome.status == "error"
    throttled = row(app, conn)
    assert throttled.last_error_kind == "rate_limited" and "slow down" in (throttled.last_error or "")
    assert throttled.next_sync_at is not None
    wait = (throttled.next_sync_at.astimezone(UTC) - started).total_seconds()
    assert 3600 < wait < 3600 * 1.3  # Retry-After, plus jitter
    assert alerts(app, conn) == 0


def test_google_disconnect_revokes_and_removes_our_events_only_when_asked(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    book(api, zoe, at(2, 10))
    sync(app, conn)
    assert len(live_google_events(google)) == 1
    resp = visitor.post(f"/connect/connections/{conn.id}/delete", {"remove_events": "1"}, page="/connect/")
    assert resp.status_code == 302
    assert connected(app, zoe["id"]) == []
    assert live_google_events(google) == []  # our booking's copy is gone
    assert not any(google.fake.refresh_tokens.values())  # and calsync's access revoked at Google


def test_a_consent_shared_by_two_calendars_is_revoked_with_the_last(
    app: Flask, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    google.fake.add_calendar("team@group.calendar.google.com", "Team", access_role="reader")
    pick = visitor.get(consent(start(visitor, "google")))
    assert connect(visitor, "google", pick, staff_id=zoe["id"], conflict=(0, 1)).status_code == 303
    first, second = connected(app, zoe["id"])
    visitor.post(f"/connect/connections/{first.id}/delete", {}, page="/connect/")
    assert any(google.fake.refresh_tokens.values())  # "Team" still reads with it
    assert sync(app, second).status == "ok"
    visitor.post(f"/connect/connections/{second.id}/delete", {}, page="/connect/")
    assert not any(google.fake.refresh_tokens.values())


def test_google_disconnect_keeps_our_events_by_default(app: Flask, api: Api, visitor: Browser,
                                                       zoe: dict[str, Any], google: ServedFake) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    book(api, zoe, at(2, 10))
    sync(app, conn)
    visitor.post(f"/connect/connections/{conn.id}/delete", {}, page="/connect/")
    assert connected(app, zoe["id"]) == []
    assert len(live_google_events(google)) == 1
    assert not any(google.fake.refresh_tokens.values())


# --- Microsoft --------------------------------------------------------------------------------


def connect_outlook(app: Flask, visitor: Browser, zoe: dict[str, Any], linked: int | None = 0) -> Connection:
    pick = visitor.get(consent(start(visitor, "microsoft")))
    assert connect(visitor, "microsoft", pick, staff_id=zoe["id"], linked=linked).status_code == 303
    return connected(app, zoe["id"])[-1]


def test_microsoft_busy_time_by_show_as(app: Flask, visitor: Browser, zoe: dict[str, Any],
                                        graph: ServedGraph) -> None:
    conn = connect_outlook(app, visitor, zoe, linked=None)
    graph.fake.put_event(at(2, 10), at(2, 11))
    graph.fake.put_event(at(2, 13), at(2, 14), showAs="free")
    graph.fake.put_event(at(2, 15), at(2, 16), showAs="oof")
    graph.fake.put_event(at(2, 17), at(2, 18),
                         responseStatus={"response": "declined", "time": utc_text(at(1, 9))})
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 2
    assert (row(app, conn).sync_token or "").startswith(graph.url + "/v1.0/")  # the deltaLink


def test_microsoft_two_way_move_and_410_resync(app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any],
                                               graph: ServedGraph) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href in graph.fake.mailbox.events
    graph.fake.patch_event(href, {"start": {"dateTime": utc_text(at(3, 14)), "timeZone": "UTC"},
                                  "end": {"dateTime": utc_text(at(3, 15)), "timeZone": "UTC"}})
    assert sync(app, conn).status == "ok"
    moved = api.get(f"/appointments/{appt['id']}").get_json()
    assert moved["start"] == iso(at(3, 14)).replace("+00:00", "Z")
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "microsoft")]
    assert customer_emails(app, appt["id"]) == ["booked", "rescheduled"]
    sync(app, conn)
    assert (row(app, conn).sync_token or "").startswith(graph.url + "/v1.0/")  # a deltaLink to refuse
    graph.fake.expire_delta_tokens()
    before = len(graph.fake.log)
    assert sync(app, conn).status == "ok"
    deltas = [(r["status"], "$deltatoken" in r["params"]) for r in graph.fake.log[before:]
              if r["path"].endswith("/calendarView/delta")]
    assert deltas == [(410, True), (200, False)]  # the refused deltaLink, then one full listing
    assert len(graph.fake.mailbox.events) == 1  # no duplicate after the full resync
    with app.extensions["calsync"].sessions() as s:
        assert s.get(Appointment, appt["id"]).status == "confirmed"  # type: ignore[union-attr]


def test_microsoft_expired_refresh_token_is_reconnect_with_one_alert(app: Flask, api: Api, visitor: Browser,
                                                                     zoe: dict[str, Any], graph: ServedGraph
                                                                     ) -> None:
    conn = ready(app, connect_outlook(app, visitor, zoe))
    sync(app, conn)
    graph.fake.expire_refresh_tokens()  # AADSTS700082: 90 days unused
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "error"
    sync(app, conn)
    failed = row(app, conn)
    assert failed.last_error_kind == "reconnect" and "again" in (failed.last_error or "")
    assert alerts(app, conn) == 1
    assert item_of(app, appt["id"]).state == "pending"
