"""Google / Microsoft connections through the product's paths (the real "Connect" flow,
`sync_connection`) against the contract fakes, for what the other files leave out: a 401 that
persists after the one refresh, moves written in Outlook in a Windows zone name and across DST,
and busy time that goes away when someone else's event is deleted in the calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import niquests
import pytest
from flask import Flask
from sqlalchemy import select

from calsync.models import BusyBlock, Connection
from tests import provider_two_way
from tests.admin_helpers import Browser
from tests.conftest import Api
from tests.fakes.google_calendar import ServedFake
from tests.fakes.microsoft_graph import ServedGraph
from tests.feed_helpers import iso
from tests.integration.test_google_twoway import next_dst_change
from tests.integration.test_provider_sync import (
    alerts,
    book,
    connect_outlook,
    customer_emails,
    google_time,
    history,
    item_of,
    ready,
    row,
    sync,
)
from tests.linked_helpers import at
from tests.provider_helpers import connect_google

# The two-way fixtures (both fakes configured, Zoë, her self-service browser).
settings, zoe, visitor = provider_two_way.settings, provider_two_way.zoe, provider_two_way.visitor

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")




def connect(app: Flask, visitor: Browser, zoe: dict[str, Any], kind: str,
            linked: int | None = 0) -> Connection:
    if kind == "google":
        return connect_google(app, visitor, zoe["id"], linked=linked)
    return connect_outlook(app, visitor, zoe, linked=linked)


def z(moment: datetime) -> str:
    return iso(moment.astimezone(UTC)).replace("+00:00", "Z")


# --- a 401 after the refresh ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["google", "microsoft"])
def test_a_401_that_persists_after_one_refresh_asks_to_connect_again(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake, graph: ServedGraph,
    kind: str,
) -> None:
    conn = ready(app, connect(app, visitor, zoe, kind))
    appt = book(api, zoe, at(2, 10))
    fake: Any = google.fake if kind == "google" else graph.fake
    if kind == "microsoft":
        fake.fail_next(401, "InvalidAuthenticationToken", times=2)
        grants_before = len(fake.token_requests)
    else:
        fake.fail_next(401, "authError", times=2)
    before = len(fake.log)
    outcome = sync(app, conn)
    assert outcome.status == "error"
    assert [r.get("status") for r in fake.log[before:]] == [401, 401]  # refreshed once, then no more
    if kind == "microsoft":
        assert [r["grant_type"] for r in fake.token_requests[grants_before:]] == ["refresh_token"]
    failed = row(app, conn)
    assert failed.status == "error" and failed.last_error_kind == "reconnect"
    assert "again" in (failed.last_error or "")
    assert alerts(app, conn) == 1  # at once: only the staff member can fix it
    assert item_of(app, appt["id"]).state == "pending"  # the booking waits, nothing lost


# --- moves written in Outlook in a Windows zone ---------------------------------------------------


def outlook_move(graph: ServedGraph, event_id: str, start: datetime, end: datetime, zone: str) -> None:
    """What Outlook sends when the staff member drags the event: a PATCH through Graph with the
    wall times in the mailbox's zone, named as Windows names it; Graph keeps the instant and the
    zone (originalStartTimeZone), and answers calsync in UTC."""
    access, _refresh = graph.fake.grant()
    answer = niquests.patch(
        f"{graph.url}/v1.0/me/calendar/events/{event_id}", verify=graph.ca_file, timeout=10,
        headers={"Authorization": f"Bearer {access}"},
        json={"start": {"dateTime": start.replace(tzinfo=None).isoformat(), "timeZone": zone},
              "end": {"dateTime": end.replace(tzinfo=None).isoformat(), "timeZone": zone}})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("windows_name", "zone"), [("W. Europe Standard Time", BERLIN),
                                                    ("Eastern Standard Time", NEW_YORK)])
@pytest.mark.parametrize("across_dst", [False, True], ids=["same_offset", "across_dst"])
def test_a_move_made_in_outlook_in_a_windows_zone_reschedules_to_the_right_instant(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], graph: ServedGraph, windows_name: str,
    zone: ZoneInfo, across_dst: bool,
) -> None:
    api.patch("/settings", {"sync_window_future_days": 400})
    if across_dst:
        change = next_dst_change(zone, at(3, 0))
        booked_at = datetime.combine(change - timedelta(days=2), datetime.min.time().replace(hour=11),
                                     zone).astimezone(UTC)
        # The same wall time after the change: another UTC offset.
        target = datetime.combine(change + timedelta(days=2), datetime.min.time().replace(hour=11), zone)
        assert target.astimezone(UTC).hour != booked_at.hour
    else:
        booked_at = at(2, 14)
        target = at(3, 15).astimezone(zone)
    conn = ready(app, connect_outlook(app, visitor, zoe))
    appt = book(api, zoe, booked_at)
    assert sync(app, conn).status == "ok"
    href = item_of(app, appt["id"]).href
    assert href is not None
    end = target + timedelta(hours=1)
    outlook_move(graph, href, target, end, windows_name)
    stored = graph.fake.mailbox.events[href]
    assert stored["originalStartTimeZone"] == windows_name and stored["start"]["timeZone"] == "UTC"
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.applied == 1
    got = api.get(f"/appointments/{appt['id']}").get_json()
    assert (got["start"], got["end"]) == (z(target), z(end))
    assert history(api, appt["id"]) == [("booked", "api"), ("rescheduled", "microsoft")]
    assert customer_emails(app, appt["id"]) == ["booked", "rescheduled"]
    assert len(graph.fake.mailbox.events) == 1


def test_the_graph_fake_refuses_a_zone_it_does_not_know(graph: ServedGraph) -> None:
    event = graph.fake.put_event(at(2, 10), at(2, 11))
    with pytest.raises(AssertionError, match="TimeZoneNotSupportedException"):
        outlook_move(graph, event["id"], at(3, 10), at(3, 11), "Middle Earth Standard Time")


# --- someone else's event deleted in the calendar -------------------------------------------------


def busy(app: Flask, conn: Connection) -> list[tuple[datetime, datetime]]:
    with app.extensions["calsync"].sessions() as s:
        found = s.execute(select(BusyBlock.start_at, BusyBlock.end_at)
                          .where(BusyBlock.connection_id == conn.id))
        return sorted((a.astimezone(UTC), b.astimezone(UTC)) for a, b in found)


@pytest.mark.parametrize("kind", ["google", "microsoft"])
def test_busy_time_goes_when_the_event_is_deleted_in_the_calendar(
    app: Flask, api: Api, visitor: Browser, zoe: dict[str, Any], google: ServedFake, graph: ServedGraph,
    kind: str,
) -> None:
    conn = connect(app, visitor, zoe, kind, linked=None)  # busy time only
    if kind == "google":
        dentist = google.fake.put_event("primary", {"summary": "Dentist", "start": google_time(at(2, 10)),
                                                    "end": google_time(at(2, 11))})
        google.fake.put_event("primary", {"summary": "Gym", "start": google_time(at(2, 15)),
                                          "end": google_time(at(2, 16))})
    else:
        dentist = graph.fake.put_event(at(2, 10), at(2, 11), zone="W. Europe Standard Time")
        graph.fake.put_event(at(2, 15), at(2, 16))
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 2
    assert busy(app, conn) == [(at(2, 10), at(2, 11)), (at(2, 15), at(2, 16))]
    refused = api.book(zoe["id"], iso(at(2, 10)), iso(at(2, 11)))
    assert refused.status_code == 409, refused.get_json()
    if kind == "google":
        google.fake.delete_event("primary", dentist["id"])
    else:
        graph.fake.delete_event(dentist["id"])
    before = len((google.fake if kind == "google" else graph.fake).log)
    outcome = sync(app, conn)
    assert outcome.status == "ok" and outcome.busy_count == 1
    assert busy(app, conn) == [(at(2, 15), at(2, 16))]
    # Read incrementally (the deletion came with the change token), not by listing everything.
    listing, token = ("/events", "syncToken") if kind == "google" else ("/calendarView/delta", "$deltatoken")
    reads = [r for r in (google.fake if kind == "google" else graph.fake).log[before:]
             if r["path"].endswith(listing)]
    assert reads and all(token in r["params"] for r in reads)
    assert api.book(zoe["id"], iso(at(2, 10)), iso(at(2, 11))).status_code == 201  # free again
