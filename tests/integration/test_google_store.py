"""The Google Calendar store (feeds.calendars.providers.google) on the contract fake of
tests/fakes/google_calendar.py — and the fake itself against Google's Calendar v3 discovery
document, so that what is verified here is at least spelled as Google spells it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import googleapiclient
import niquests
import pytest

from calsync.feeds.calendars.changes import read_changes
from calsync.feeds.calendars.providers.base import RateLimited, ReconnectNeeded, Tokens, new_pkce
from calsync.feeds.calendars.providers.google import GoogleProvider
from calsync.feeds.calendars.providers.google_events import event_id_for, google_busy_blocks
from calsync.feeds.calendars.store import InvalidSyncToken, PreconditionFailed, StoreUnavailable
from calsync.feeds.calendars.twoway import parse_remote
from calsync.feeds.sources.busy_time import BusyOptions
from tests.fakes.google_calendar import CLIENT, ServedFake, endpoints, open_fake_store, serve_google_fake

BERLIN = "Europe/Berlin"


@pytest.fixture
def google_fake() -> Iterator[ServedFake]:
    with serve_google_fake() as served:
        yield served


def booking(uid: str, start: str = "20270104T090000Z", end: str = "20270104T100000Z",
            extra: str = "") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
        f"SUMMARY:Haircut\r\nX-CALSYNC-APPOINTMENT:42\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def timed(start: str, end: str, zone: str | None = BERLIN, **more: Any) -> dict[str, Any]:
    def when(value: str) -> dict[str, str]:
        return {"dateTime": value, **({"timeZone": zone} if zone else {})}
    return {"summary": "Dentist", "start": when(start), "end": when(end), **more}


def weekly_series(served: ServedFake) -> dict[str, Any]:
    return served.fake.put_event("primary", timed(
        "2027-03-15T09:00:00+01:00", "2027-03-15T10:00:00+01:00",
        recurrence=["RRULE:FREQ=WEEKLY;COUNT=4"]))


def occurrence(master: dict[str, Any], original: str, **fields: Any) -> dict[str, Any]:
    stamp = datetime.fromisoformat(original).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return {"id": f"{master['id']}_{stamp}", "recurringEventId": master["id"], "iCalUID": master["iCalUID"],
            "originalStartTime": {"dateTime": original, "timeZone": BERLIN}, **fields}


# --- listing and incremental sync -------------------------------------------------------------


def test_full_sync_across_pages_keeps_only_the_last_pages_token(google_fake: ServedFake) -> None:
    ids = [google_fake.fake.put_event("primary", timed(f"2027-01-0{d}T09:00:00+01:00",
                                                       f"2027-01-0{d}T10:00:00+01:00"))["id"]
           for d in range(1, 8)]
    with open_fake_store(google_fake) as store:
        store.page_size = 3
        listing = store.list()
    pages = google_fake.fake.requests_to("GET", "/events")
    assert len(pages) == 3 and set(listing.etags) == set(ids)
    assert all(p["params"]["singleEvents"] == "false" and p["params"]["showDeleted"] == "true" for p in pages)
    assert [("nextSyncToken" in p["answer"]) for p in pages] == [False, False, True]
    assert listing.token == pages[-1]["answer"]["nextSyncToken"]
    assert [bool(p["params"].get("pageToken")) for p in pages] == [False, True, True]


def test_a_cancelled_event_and_a_cancelled_occurrence(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    single = fake.put_event("primary", timed("2027-03-16T12:00:00+01:00", "2027-03-16T13:00:00+01:00"))
    series = weekly_series(google_fake)
    with open_fake_store(google_fake) as store:
        start = store.list()
        assert start.token and set(start.etags) == {single["id"], series["id"]}
        fake.delete_event("primary", single["id"])
        fake.put_event("primary", occurrence(series, "2027-03-22T09:00:00+01:00", status="cancelled"))
        changes = store.changes_since(start.token)
        assert changes.deleted == {single["id"]}
        assert set(changes.changed) == {series["id"]}
        assert changes.changed[series["id"]] != start.etags[series["id"]]
        item = store.get(series["id"])
        assert item.etag == changes.changed[series["id"]]
        assert b"EXDATE;TZID=Europe/Berlin:20270322T090000" in item.body
        assert set(store.list().etags) == {series["id"]}  # the deleted one is not listed
    busy = google_busy_blocks([e for e in fake.calendars["primary"].events.values()],
                              BusyOptions(datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 5, 1, tzinfo=UTC)))
    starts = [s for s, _e in busy.intervals]
    assert datetime(2027, 3, 22, 8, tzinfo=UTC) not in starts
    assert datetime(2027, 3, 15, 8, tzinfo=UTC) in starts and datetime(2027, 3, 29, 7, tzinfo=UTC) in starts
    assert datetime(2027, 3, 16, 11, tzinfo=UTC) not in starts  # the deleted single event


def test_410_means_one_full_resync_without_duplicates(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    first = fake.put_event("primary", timed("2027-03-16T12:00:00+01:00", "2027-03-16T13:00:00+01:00"))
    with open_fake_store(google_fake) as store:
        listing = store.list()
        assert listing.token
        known = dict(listing.etags)
        second = fake.put_event("primary", timed("2027-03-17T12:00:00+01:00", "2027-03-17T13:00:00+01:00"))
        fake.expire_sync_tokens()
        with pytest.raises(InvalidSyncToken):
            store.changes_since(listing.token)
        before = len(fake.log)
        changed = read_changes(store, sync_token=listing.token, ctag=None, known=known)
    assert changed is not None and changed.full and not changed.deleted
    assert set(changed.etags) == {first["id"], second["id"]}
    assert set(changed.data) == {second["id"]}  # the unchanged one is not read again
    lists = [r for r in fake.log[before:] if r["path"].endswith("/events")]
    assert [r["status"] for r in lists] == [410, 200]  # one refusal, one full listing
    assert len(fake.calendars["primary"].events) == 2


def test_moved_events_are_read_in_their_own_zone(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    with open_fake_store(google_fake) as store:
        ours = store.create("b.ics", booking("b"))
        cases = [  # the move made in Google, and the instant calsync must read
            (timed("2027-03-29T09:00:00+02:00", "2027-03-29T10:00:00+02:00"),
             datetime(2027, 3, 29, 7, tzinfo=UTC), b"DTSTART;TZID=Europe/Berlin:20270329T090000"),
            (timed("2027-03-26T09:00:00+01:00", "2027-03-26T10:00:00+01:00", zone=None),
             datetime(2027, 3, 26, 8, tzinfo=UTC), b"DTSTART:20270326T080000Z"),
            # A wall time only, its zone named: Google accepts that in requests.
            (timed("2027-10-31T09:00:00", "2027-10-31T10:00:00"),
             datetime(2027, 10, 31, 8, tzinfo=UTC), b"DTSTART;TZID=Europe/Berlin:20271031T090000"),
        ]
        for change, instant, line in cases:
            fake.patch_event("primary", ours.href, {**change, "sequence": 3})
            item = store.get(ours.href)
            remote = parse_remote(item.body)
            assert remote.start == instant and remote.uid == "b" and remote.sequence == 3
            assert line in item.body
            if b"TZID" in line:
                assert b"BEGIN:VTIMEZONE\r\nTZID:Europe/Berlin" in item.body
        fake.patch_event("primary", ours.href,
                         {"start": {"date": "2027-04-01"}, "end": {"date": "2027-04-02"}})
        body = store.get(ours.href).body
        assert b"DTSTART;VALUE=DATE:20270401" in body and b"DTEND;VALUE=DATE:20270402" in body


def test_a_series_expands_across_dst_in_its_zone(google_fake: ServedFake) -> None:
    weekly_series(google_fake)
    busy = google_busy_blocks(list(google_fake.fake.calendars["primary"].events.values()),
                              BusyOptions(datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 5, 1, tzinfo=UTC)))
    assert [s.hour for s, _e in busy.intervals] == [8, 8, 7, 7]  # 09:00 in Berlin, CET then CEST


def test_busy_semantics_transparent_and_declined_are_free(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    fake.put_event("primary", timed("2027-03-16T09:00:00+01:00", "2027-03-16T10:00:00+01:00",
                                    transparency="transparent"))
    fake.put_event("primary", timed("2027-03-16T11:00:00+01:00", "2027-03-16T12:00:00+01:00",
                                    attendees=[{"email": "zoe@example.com", "self": True,
                                                "responseStatus": "declined"}]))
    kept = fake.put_event("primary", timed("2027-03-16T13:00:00+01:00", "2027-03-16T14:00:00+01:00",
                                           attendees=[{"email": "zoe@example.com", "self": True,
                                                       "responseStatus": "accepted"}]))
    busy = google_busy_blocks(list(fake.calendars["primary"].events.values()),
                              BusyOptions(datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)))
    assert busy.intervals == [(datetime(2027, 3, 16, 12, tzinfo=UTC), datetime(2027, 3, 16, 13, tzinfo=UTC))]
    assert kept["id"]


# --- writes -----------------------------------------------------------------------------------


def test_our_booking_carries_its_appointment_and_a_deterministic_id(google_fake: ServedFake) -> None:
    with open_fake_store(google_fake) as store:
        written = store.create("u.ics", booking("booking-42@calsync", extra="STATUS:CANCELLED\r\n"
                                                                            "TRANSP:TRANSPARENT\r\n"))
        body = store.get(written.href).body
    event = google_fake.fake.calendars["primary"].events[written.href]
    assert written.href == event_id_for("booking-42@calsync")
    assert event["extendedProperties"]["private"]["calsyncAppointment"] == "42"
    # Google's "cancelled" is a deletion: a kept, cancelled copy stays visible and free.
    assert event["status"] == "confirmed" and event["transparency"] == "transparent"
    assert b"STATUS:CANCELLED" in body and b"X-CALSYNC-APPOINTMENT:42" in body
    assert google_fake.fake.requests_to("POST", "/events")[0]["params"]["sendUpdates"] == "none"


def test_a_retried_insert_never_duplicates(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    with open_fake_store(google_fake) as store:
        first = store.create("r.ics", booking("r"))
        with pytest.raises(PreconditionFailed) as failed:
            store.create("r.ics", booking("r"))  # the answer to the first was lost: try again
        assert failed.value.href == first.href
        assert len(fake.calendars["primary"].events) == 1
        store.delete(first.href, first.etag)
        again = store.create("r.ics", booking("r", start="20270105T090000Z", end="20270105T100000Z"))
        assert again.href == first.href  # Google keeps a deleted id: the event comes back
        assert b"20270105T090000Z" in store.get(again.href).body
    assert [e["status"] for e in fake.calendars["primary"].events.values()] == ["confirmed"]


def test_412_when_the_event_changed_in_google(google_fake: ServedFake) -> None:
    with open_fake_store(google_fake) as store:
        written = store.create("p.ics", booking("p"))
        google_fake.fake.patch_event("primary", written.href, {"summary": "Moved by Zoe"})
        with pytest.raises(PreconditionFailed):
            store.update(written.href, booking("p", start="20270104T110000Z", end="20270104T120000Z"),
                         written.etag)
        with pytest.raises(PreconditionFailed):
            store.delete(written.href, written.etag)
        current = store.get(written.href)
        assert b"T090000Z" in current.body  # nothing overwritten
        updated = store.update(written.href, booking("p", start="20270104T110000Z", end="20270104T120000Z"),
                               current.etag)
    assert updated.etag != current.etag
    event = google_fake.fake.calendars["primary"].events[written.href]
    assert event["start"] == {"dateTime": "2027-01-04T11:00:00Z"}
    patch = google_fake.fake.requests_to("PATCH")[-1]
    assert patch["headers"]["If-Match"] == current.etag


# --- tokens and errors ------------------------------------------------------------------------


def test_an_expired_access_token_is_refreshed_once(google_fake: ServedFake) -> None:
    fake = google_fake.fake
    seen: list[Tokens] = []
    access, refresh = fake.grant()
    tokens = Tokens(access, refresh, time.time() + 3600)
    with open_fake_store(google_fake, tokens=tokens) as store:
        store.api._on_tokens = seen.append
        fake.expire_access_tokens()
        assert store.list().etags == {}
    statuses = [r["status"] for r in fake.log]
    assert statuses == [401, 200]
    assert len(seen) == 1 and seen[0].access_token != access and seen[0].refresh_token == refresh


def test_invalid_grant_asks_for_a_reconnection(google_fake: ServedFake) -> None:
    with open_fake_store(google_fake) as store:
        google_fake.fake.revoke_consent()
        with pytest.raises(ReconnectNeeded) as failed:
            store.list()
    assert failed.value.kind == "reconnect" and "connect Google Calendar again" in str(failed.value)


def test_rate_limits_are_waited_out_honouring_retry_after(google_fake: ServedFake) -> None:
    slept: list[float] = []
    google_fake.fake.fail_next(403, "rateLimitExceeded", retry_after="7")
    google_fake.fake.fail_next(429, retry_after="3")
    google_fake.fake.fail_next(403, "userRateLimitExceeded")  # no Retry-After: backoff with jitter
    with open_fake_store(google_fake, sleep=slept.append) as store:
        assert store.list().token
        assert slept[:2] == [7.0, 3.0] and 2.0 <= slept[2] <= 4.0  # 2**2 * [0.5, 1]
        google_fake.fake.fail_next(429, retry_after="5", times=10)
        with pytest.raises(RateLimited) as failed:
            store.list()
    assert failed.value.retry_after == 5.0 and len(slept) == 6  # three more tries, then it gives up


def test_a_retry_after_beyond_the_deadline_is_not_slept(google_fake: ServedFake) -> None:
    slept: list[float] = []
    google_fake.fake.fail_next(429, retry_after="3600")
    with open_fake_store(google_fake, sleep=slept.append) as store, pytest.raises(RateLimited):
        store.list()
    assert slept == []


def test_server_errors_and_forbidden_calendars(google_fake: ServedFake) -> None:
    google_fake.fake.fail_next(503)
    with open_fake_store(google_fake) as store, pytest.raises(StoreUnavailable) as failed:
        store.list()
    assert failed.value.kind == "http_status" and "later" in str(failed.value)


# --- the provider: OAuth and the calendar list -------------------------------------------------


def test_consent_code_exchange_calendar_list_and_revocation(google_fake: ServedFake) -> None:
    google_fake.fake.add_calendar("team@group.calendar.google.com", "Team", access_role="reader")
    provider = GoogleProvider(endpoints(google_fake), CLIENT, allow_private=True)
    pkce = new_pkce()
    redirect_uri = "https://calsync.example/oauth/google/callback"
    url = provider.authorise_url(state="s1", code_challenge=pkce.challenge, redirect_uri=redirect_uri)
    query = parse_qs(urlparse(url).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["code_challenge_method"] == ["S256"]
    answer = niquests.get(url, allow_redirects=False)
    back = parse_qs(urlparse(answer.headers["Location"]).query)
    assert back["state"] == ["s1"]
    with pytest.raises(ReconnectNeeded):  # a wrong verifier: RFC 7636 §4.6
        provider.exchange_code(code=back["code"][0], code_verifier=new_pkce().verifier,
                               redirect_uri=redirect_uri)
    answer = niquests.get(url, allow_redirects=False)
    code = parse_qs(urlparse(answer.headers["Location"]).query)["code"][0]
    tokens = provider.exchange_code(code=code, code_verifier=pkce.verifier, redirect_uri=redirect_uri)
    assert tokens.refresh_token
    calendars = {c.id: c for c in provider.list_calendars(tokens)}
    assert calendars["primary"].writable and calendars["primary"].primary
    assert not calendars["team@group.calendar.google.com"].writable
    channel = provider.subscribe(tokens, "primary", address="https://calsync.example/hooks/google",
                                 channel_token="secret-1")
    renewed = provider.renew(tokens, "primary", channel, address="https://calsync.example/hooks/google")
    assert set(google_fake.fake.channels) == {renewed.id} and renewed.token == "secret-1"
    provider.revoke(tokens.refresh_token)
    assert tokens.refresh_token is not None
    with pytest.raises(ReconnectNeeded):
        provider.refresh(tokens.refresh_token)


# --- the fake against Google's discovery document ---------------------------------------------

DISCOVERY = json.loads((Path(googleapiclient.__file__).parent / "discovery_cache/documents/calendar.v3.json")
                       .read_text())


def _unknown(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """Names in `value` that the discovery schema does not have."""
    if "$ref" in schema:
        schema = DISCOVERY["schemas"][schema["$ref"]]
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name, inner in value.items():
            if properties is not None and name in properties:
                found += _unknown(inner, properties[name], f"{where}.{name}")
            elif extra is not None:
                found += _unknown(inner, extra, f"{where}.{name}")
            else:
                found.append(f"{where}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for inner in value:
            found += _unknown(inner, schema["items"], where + "[]")
    return found


def _method(method: str, path: str) -> dict[str, Any]:
    resources = DISCOVERY["resources"]
    tail = path.removeprefix("/calendar/v3/")
    table = {
        ("GET", "users/me/calendarList"): resources["calendarList"]["methods"]["list"],
        ("POST", "channels/stop"): resources["channels"]["methods"]["stop"],
    }
    if (method, tail) in table:
        return table[(method, tail)]
    parts = tail.split("/")
    events = resources["events"]["methods"]
    if len(parts) == 3:
        return events["list"] if method == "GET" else events["insert"]
    if parts[3] == "watch":
        return events["watch"]
    return events[{"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]]


def test_every_field_exchanged_is_in_the_discovery_document(google_fake: ServedFake) -> None:
    # A run through everything the store and the provider do, each on an empty calendar.
    for scenario in (test_a_cancelled_event_and_a_cancelled_occurrence,
                     test_a_retried_insert_never_duplicates, test_412_when_the_event_changed_in_google,
                     test_moved_events_are_read_in_their_own_zone,
                     test_consent_code_exchange_calendar_list_and_revocation):
        google_fake.fake.add_calendar("primary", "Zoe")
        scenario(google_fake)
    problems: list[str] = []
    checked = set()
    for entry in google_fake.fake.log:
        method = _method(entry["method"], entry["path"])
        checked.add(method["id"])
        problems += [f"{method['id']} ?{p}" for p in entry["params"] if p not in method.get("parameters", {})]
        if entry["body"] is not None and "request" in method:
            problems += _unknown(entry["body"], method["request"], method["id"] + " request")
        if entry.get("status", 500) < 300 and entry.get("answer") is not None and "response" in method:
            problems += _unknown(entry["answer"], method["response"], method["id"] + " response")
    assert not problems
    assert checked >= {"calendar.events.list", "calendar.events.get", "calendar.events.insert",
                       "calendar.events.patch", "calendar.events.delete", "calendar.calendarList.list",
                       "calendar.events.watch", "calendar.channels.stop"}
