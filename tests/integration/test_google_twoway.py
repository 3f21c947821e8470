"""Google Calendar two-way sync and busy time through the product's own paths (a connection
made with the real "Connect" flow, then `sync_connection`) against the contract fake of
tests/fakes/google_calendar.py: deletions (cancel / restore), moves the booking rules refuse,
a 412 in the middle of a push, an insert whose answer was lost, moves given in a zone and
across DST, a series with a modified occurrence and the all-day policy, 5xx during a sync, and
the OAuth scopes each Calendar API method calsync calls needs (Google's discovery document).
A lost notification caught by the poll: tests/integration/channels/test_missed_notifications.py.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from calsync.feeds.calendars.provider_access import open_tokens
from calsync.feeds.calendars.providers import google as google_module
from calsync.feeds.calendars.providers.google_api import SCOPES
from calsync.feeds.calendars.store import StoreUnavailable
from calsync.models import BusyBlock, Conflict, Connection, LinkedItem
from tests import provider_two_way
from tests.admin_helpers import Browser
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.feed_helpers import iso
from tests.integration.test_google_store import DISCOVERY, _method
from tests.integration.test_provider_sync import (
    alerts,
    book,
    customer_emails,
    google_time,
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

NEW_YORK = ZoneInfo("America/New_York")




def z(moment: datetime) -> str:
    """An instant as the API answers it."""
    return iso(moment).replace("+00:00", "Z")


def appointment(api: Api, appt_id: int) -> dict[str, Any]:
    return api.get(f"/appointments/{appt_id}").get_json()  # type: ignore[no-any-return]


def conflicts(app: Flask) -> list[Conflict]:
    with app.extensions["calsync"].sessions() as s:
        return list(s.scalars(select(Conflict).order_by(Conflict.id)))


def event_start(google: ServedFake, event_id: str) -> datetime:
    start = google.fake.calendars["primary"].events[event_id]["start"]
    moment = datetime.fromisoformat(start["dateTime"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(start.get("timeZone", "UTC")))
    return moment.astimezone(UTC)


def past_backoff(app: Flask) -> None:
    """Date every linked item's last attempt two hours back, past any retry pause."""
    with app.extensions["calsync"].sessions.begin() as s:
        for item in s.scalars(select(LinkedItem)):
            item.updated_at = item.updated_at - timedelta(hours=2)


def busy_blocks(app: Flask, conn: Connection) -> list[tuple[datetime, datetime]]:
    with app.extensions["calsync"].sessions() as s:
        found = s.execute(select(BusyBlock.start_at, BusyBlock.end_at)
                          .where(BusyBlock.connection_id == conn.id).order_by(BusyBlock.start_at)).all()
    return [(a.astimezone(UTC), b.astimezone(UTC)) for a, b in found]


# --- deletions in Google ----------------------------------------------------------------------


def test_a_deletion_in_google_cancels_the_booking_and_emails_the_customer_once(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    google.fake.delete_event("primary", item_of(app, appt["id"]).href)  # the staff member deletes it
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.applied == 1
    assert appointment(api, appt["id"])["status"] == "cancelled"
    assert history(api, appt["id"]) == [("booked", "api"), ("cancelled", "google")]
    assert customer_emails(app, appt["id"]) == ["booked", "cancelled"]
    # Later syncs neither cancel again nor email again, and the event is not written back.
    assert sync(app, conn).status in ("ok", "unchanged")
    assert customer_emails(app, appt["id"]) == ["booked", "cancelled"]
    assert live_google_events(google) == []
    assert item_of(app, appt["id"]).state == "deleted"


def test_with_restore_a_deletion_in_google_brings_the_event_back(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    api.patch("/settings", {"calendar_delete_action": "restore"})
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href is not None
    google.fake.delete_event("primary", href)
    assert sync(app, conn).status == "ok"
    # The same event id (Google keeps deleted ids: the insert's 409 brings it back), alive again
    # at the booked time; the appointment stays, nobody is emailed.
    restored = item_of(app, appt["id"])
    assert restored.state == "synced" and restored.href == href
    assert [e["id"] for e in live_google_events(google)] == [href]
    assert event_start(google, href) == at(2, 10)
    assert appointment(api, appt["id"])["status"] == "confirmed"
    assert history(api, appt["id"]) == [("booked", "api")]
    assert customer_emails(app, appt["id"]) == ["booked"]
    assert sync(app, conn).status in ("ok", "unchanged")
    assert len(live_google_events(google)) == 1


# --- moves that break the booking rules ---------------------------------------------------------


@pytest.mark.parametrize("move", ["onto_another_booking", "onto_busy_time", "made_all_day"])
def test_a_move_the_rules_refuse_opens_a_conflict_and_changes_nothing(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake, move: str,
) -> None:
    google.fake.put_event("primary", {"summary": "Dentist", "start": google_time(at(2, 15)),
                                      "end": google_time(at(2, 16))})  # Zoë's own, busy time
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    book(api, zoe, at(2, 12))  # another customer's booking
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href is not None
    if move == "onto_another_booking":
        changes = {"start": google_time(at(2, 12)), "end": google_time(at(2, 13))}
    elif move == "onto_busy_time":
        changes = {"start": google_time(at(2, 15)), "end": google_time(at(2, 16))}
    else:
        day = at(3, 0).date()
        changes = {"start": {"date": day.isoformat()}, "end": {"date": (day + timedelta(days=1)).isoformat()}}
    google.fake.patch_event("primary", href, changes)
    calendar_version = google.fake.calendars["primary"].events[href]["etag"]
    outcome = sync(app, conn)
    assert outcome.conflicts == 1 and outcome.applied == 0
    [conflict] = conflicts(app)
    assert conflict.appointment_id == appt["id"] and conflict.status == "open"
    assert conflict.platform_start.astimezone(UTC) == at(2, 10)
    # The appointment is unchanged, the customer not emailed, and Google's event not overwritten.
    got = appointment(api, appt["id"])
    assert got["start"] == z(at(2, 10)) and got["status"] == "confirmed"
    assert history(api, appt["id"]) == [("booked", "api")]
    assert customer_emails(app, appt["id"]) == ["booked"]
    assert item_of(app, appt["id"]).state == "conflict"
    sync(app, conn)
    assert google.fake.calendars["primary"].events[href]["etag"] == calendar_version
    assert len(conflicts(app)) == 1


def test_a_move_outside_working_hours_is_applied(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    """By design (feeds/calendars/twoway.py): the staff member chose the time, so a move made in
    their calendar may leave their working hours (09-17 here); only collisions are refused."""
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href is not None
    google.fake.patch_event("primary", href, {"start": google_time(at(2, 19)), "end": google_time(at(2, 20))})
    outcome = sync(app, conn)
    assert outcome.applied == 1 and outcome.conflicts == 0
    assert appointment(api, appt["id"])["start"] == z(at(2, 19))
    assert conflicts(app) == []


# --- a 412 in the middle of a push ----------------------------------------------------------------


def test_a_412_during_a_push_rereads_and_applies_the_calendars_change(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The staff member moves the booking in Google (move 1); the sync applies it and refreshes
    the event (a PATCH with If-Match). Between that sync's listing and its PATCH the staff
    member moves it again (move 2): the PATCH is refused with 412, the event is read again,
    move 2 is applied — never overwritten with move 1."""
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href is not None
    google.fake.patch_event("primary", href, {"start": google_time(at(3, 9)), "end": google_time(at(3, 10))})
    real_update = google_module.GoogleCalendarStore.update
    moved_again: list[bool] = []

    def update_racing_the_staff_member(self: Any, item_href: str, body: bytes, etag: str | None) -> Any:
        if not moved_again:
            moved_again.append(True)
            google.fake.patch_event("primary", item_href, {"start": google_time(at(3, 14)),
                                                           "end": google_time(at(3, 15))})
        return real_update(self, item_href, body, etag)

    monkeypatch.setattr(google_module.GoogleCalendarStore, "update", update_racing_the_staff_member)
    before = len(google.fake.log)
    outcome = sync(app, conn)
    assert outcome.status == "ok" and moved_again
    patches = [r["status"] for r in google.fake.log[before:] if r["method"] == "PATCH"]
    assert patches[0] == 412 and patches[-1] == 200
    got = appointment(api, appt["id"])
    assert got["start"] == z(at(3, 14)) and got["status"] == "confirmed"
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "google"),
                                        ("rescheduled", "google")]
    assert event_start(google, href) == at(3, 14)  # the calendar's latest change stands
    assert conflicts(app) == []
    assert item_of(app, appt["id"]).state == "synced"
    assert len(live_google_events(google)) == 1


# --- an insert whose answer was lost --------------------------------------------------------------


def test_an_insert_whose_answer_was_lost_is_adopted_not_duplicated(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    real_create = google_module.GoogleCalendarStore.create
    calls: list[int] = []

    def answer_lost(self: Any, name: str, body: bytes) -> Any:
        calls.append(1)
        written = real_create(self, name, body)  # Google made the event ...
        if len(calls) == 1:
            raise StoreUnavailable("network", "The connection broke before the answer came.")  # ... unheard
        return written

    monkeypatch.setattr(google_module.GoogleCalendarStore, "create", answer_lost)
    sync(app, conn)
    assert item_of(app, appt["id"]).href is None  # calsync does not know the event exists
    assert len(live_google_events(google)) == 1
    past_backoff(app)
    before = len(google.fake.log)
    assert sync(app, conn).status == "ok"
    requests = [(r["method"], r["status"]) for r in google.fake.log[before:] if r["method"] != "GET"]
    assert requests == [("POST", 409), ("PATCH", 200)]  # the retried insert refused, then adopted
    item = item_of(app, appt["id"])
    assert item.state == "synced" and item.href is not None
    assert list(google.fake.calendars["primary"].events) == [item.href]  # one event, ever
    assert event_start(google, item.href) == at(2, 10)


# --- moves given in a zone, and across DST --------------------------------------------------------


def next_dst_change(zone: ZoneInfo, after: datetime) -> date:
    """The first day after `after` whose noon has another UTC offset than the day before's."""
    day = after.date()
    noon = datetime.min.time().replace(hour=12)
    for _ in range(400):
        if datetime.combine(day + timedelta(days=1), noon, zone).utcoffset() != \
                datetime.combine(day, noon, zone).utcoffset():
            return day + timedelta(days=1)
        day += timedelta(days=1)
    raise AssertionError(f"no DST change in {zone.key} within 400 days")


def wall(day: date, hour: int, zone: ZoneInfo = NEW_YORK) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


@pytest.mark.parametrize("form", ["local_time_and_zone", "offset_and_zone"])
@pytest.mark.parametrize("across_dst", [False, True], ids=["same_offset", "across_dst"])
def test_a_move_given_in_new_york_time_reschedules_to_the_right_instant(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake, form: str,
    across_dst: bool,
) -> None:
    api.patch("/settings", {"sync_window_future_days": 400})
    if across_dst:
        change = next_dst_change(NEW_YORK, at(3, 0))
        booked_at = wall(change - timedelta(days=2), 10).astimezone(UTC)
        target = wall(change + timedelta(days=2), 10)  # the same wall time, another UTC offset
        assert booked_at.hour != target.astimezone(UTC).hour
    else:
        booked_at, target = at(2, 14), at(3, 15).astimezone(NEW_YORK)
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, booked_at)
    assert sync(app, conn).status == "ok"
    end = target + timedelta(hours=1)

    def when(moment: datetime) -> dict[str, str]:
        local = form == "local_time_and_zone"
        text = moment.replace(tzinfo=None).isoformat() if local else moment.isoformat()
        return {"dateTime": text, "timeZone": "America/New_York"}

    href = item_of(app, appt["id"]).href
    assert href is not None
    google.fake.patch_event("primary", href, {"start": when(target), "end": when(end)})
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.applied == 1
    got = appointment(api, appt["id"])
    assert (got["start"], got["end"]) == (z(target.astimezone(UTC)), z(end.astimezone(UTC)))
    assert history(api, appt["id"])[-1] == ("rescheduled", "google")


# --- busy time: a series with a modified occurrence, the all-day policy ---------------------------


def utc_when(moment: datetime) -> dict[str, str]:
    return {"dateTime": z(moment), "timeZone": "UTC"}


def test_a_series_with_a_modified_occurrence_and_the_all_day_policy_through_the_sync(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = connect_google(app, visitor, zoe["id"], linked=None)  # busy time only
    first = at(3, 9)
    master = google.fake.put_event("primary", {
        "summary": "Team meeting", "start": utc_when(first), "end": utc_when(first + timedelta(hours=1)),
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]})
    second = first + timedelta(weeks=1)
    moved = second + timedelta(days=1, hours=6)
    google.fake.put_event("primary", {  # the second occurrence moved a day later, to the afternoon
        "id": f"{master['id']}_{second:%Y%m%dT%H%M%SZ}", "recurringEventId": master["id"],
        "iCalUID": master["iCalUID"], "originalStartTime": utc_when(second), "status": "confirmed",
        "start": utc_when(moved), "end": utc_when(moved + timedelta(hours=1))})
    holiday = at(5, 0).date()
    google.fake.put_event("primary", {"summary": "Holiday", "start": {"date": holiday.isoformat()},
                                      "end": {"date": (holiday + timedelta(days=1)).isoformat()}})
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 5
    weekly = [first, moved, first + timedelta(weeks=2), first + timedelta(weeks=3)]
    all_day = (datetime.combine(holiday, datetime.min.time(), UTC),
               datetime.combine(holiday + timedelta(days=1), datetime.min.time(), UTC))
    assert busy_blocks(app, conn) == sorted([(s, s + timedelta(hours=1)) for s in weekly] + [all_day])
    # All-day events ignored: the connection is read again with the new rule.
    assert api.patch(f"/connections/{conn.id}", {"all_day": "ignore"}).status_code == 200
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 4
    assert busy_blocks(app, conn) == [(s, s + timedelta(hours=1)) for s in weekly]


# --- server errors during a sync ------------------------------------------------------------------


def test_a_5xx_while_listing_keeps_the_writes_for_the_next_sync(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    google.fake.fail_next(503)
    outcome = sync(app, conn)
    assert outcome.status == "error"
    failed = row(app, conn)
    assert failed.status == "error" and failed.last_error_kind == "http_status"
    assert failed.next_sync_at is not None and alerts(app, conn) == 0  # retried, no alert yet
    assert item_of(app, appt["id"]).state == "pending" and live_google_events(google) == []
    assert sync(app, conn).status == "ok"
    assert item_of(app, appt["id"]).state == "synced"
    assert len(live_google_events(google)) == 1 and row(app, conn).status == "ok"


def test_a_5xx_on_the_insert_keeps_the_booking_pending_and_writes_it_once_later(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    real_create = google_module.GoogleCalendarStore.create
    failing = [True]

    def create(self: Any, name: str, body: bytes) -> Any:
        if failing.pop() if failing else False:
            google.fake.fail_next(500)  # the insert itself is answered 500
        return real_create(self, name, body)

    monkeypatch.setattr(google_module.GoogleCalendarStore, "create", create)
    outcome = sync(app, conn)
    assert outcome.status == "error" and "retried" in (outcome.error or "")
    assert item_of(app, appt["id"]).state in ("pending", "error") and live_google_events(google) == []
    past_backoff(app)
    assert sync(app, conn).status == "ok"
    assert item_of(app, appt["id"]).state == "synced" and len(live_google_events(google)) == 1


# --- scopes -------------------------------------------------------------------------------------


def test_every_calendar_api_method_calsync_uses_is_allowed_by_the_scopes_it_asks_for(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake,
) -> None:
    """What the discovery document says each method needs, against google_api.SCOPES, for the
    requests the product made: connect (calendar list), sync and two-way sync (list, get,
    insert, patch, delete, a 409 on a re-insert), a watch channel opened and stopped."""
    services = app.extensions["calsync"]
    api.patch("/settings", {"calendar_delete_action": "restore"})
    conn = ready(app, connect_google(app, visitor, zoe["id"]))
    appt = book(api, zoe, at(2, 10))
    sync(app, conn)  # insert
    href = item_of(app, appt["id"]).href
    assert href is not None
    google.fake.delete_event("primary", href)
    sync(app, conn)  # restore: the insert's 409, the event read, patched back
    assert api.patch(f"/appointments/{appt['id']}", {"start": iso(at(2, 11)),
                                                      "end": iso(at(2, 12))}).status_code == 200
    sync(app, conn)  # patch
    assert api.post(f"/appointments/{appt['id']}/cancel", {}).status_code in (200, 204)
    sync(app, conn)  # delete
    provider = services.sync.providers.provider("google")
    tokens = open_tokens(services.vault, row(app, conn).tokens_sealed or "", "Google Calendar")
    channel = provider.subscribe(tokens, "primary", address="https://cal.example.test/hooks/google",
                                 channel_token="t" * 32)
    provider.stop(tokens, channel)
    used: dict[str, set[str]] = {}
    for entry in google.fake.log:
        method = _method(entry["method"], entry["path"])
        used[method["id"]] = set(method.get("scopes", []))
    assert set(used) >= {"calendar.calendarList.list", "calendar.events.list", "calendar.events.get",
                         "calendar.events.insert", "calendar.events.patch", "calendar.events.delete",
                         "calendar.events.watch", "calendar.channels.stop"}, sorted(used)
    assert {m: scopes & set(SCOPES) for m, scopes in used.items() if not scopes & set(SCOPES)} == {}
    assert DISCOVERY["revision"]  # the document the test reads (googleapiclient's cached copy)

