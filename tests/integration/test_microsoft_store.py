"""The Microsoft Graph calendar store (issue 12, foundation) against the contract fake in
tests/fakes/microsoft_graph.py: delta rounds, @removed, 410 resync, times and zones, series
occurrences, conditional writes, throttling, the per-mailbox cap, and token expiry. What this
proves holds for the fake, which follows Microsoft's published reference; nothing here has
met the real Graph."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import icalendar
import niquests
import pytest

from calsync.feeds.calendars.changes import read_changes
from calsync.feeds.calendars.providers.base import (
    RateLimited,
    ReconnectNeeded,
    Tokens,
    new_pkce,
    s256_challenge,
)
from calsync.feeds.calendars.providers.microsoft import transaction_id_for
from calsync.feeds.calendars.providers.microsoft_account import finish_sign_in, list_calendars, sign_in_url
from calsync.feeds.calendars.providers.microsoft_api import MicrosoftEndpoints
from calsync.feeds.calendars.providers.microsoft_events import graph_busy_blocks
from calsync.feeds.calendars.store import InvalidSyncToken, PreconditionFailed, StoreUnavailable
from calsync.feeds.sources.busy_time import BusyOptions
from calsync.feeds.sources.fetch import FetchLimits
from tests.fakes.microsoft_graph import CLIENT, ServedGraph, open_fake_graph_store

WINDOW = (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 12, 31, tzinfo=UTC))


def at(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=UTC)


def booking(uid: str, start: str = "20270104T090000Z", end: str = "20270104T100000Z") -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync tests//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:{start}\r\nDTEND:{end}\r\n"
            "SUMMARY:Haircut\r\nX-CALSYNC-APPOINTMENT:42\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def start_of(body: bytes) -> Any:
    event: Any = icalendar.Calendar.from_ical(body).walk("VEVENT")[0]
    return event["DTSTART"].dt


def utc(text: str) -> dict[str, str]:
    """A dateTimeTimeZone as Graph answers it under Prefer: outlook.timezone="UTC"."""
    return {"dateTime": text + ".0000000", "timeZone": "UTC"}


def test_delta_follows_pages_to_the_delta_link_and_reads_removals(graph: ServedGraph) -> None:
    fake = graph.fake
    days = [timedelta(days=i) for i in range(25)]
    ids = [fake.put_event(at("2027-02-01", 8) + d, at("2027-02-01", 9) + d)["id"] for d in days]
    with open_fake_graph_store(graph, window=WINDOW) as store:
        store.page_size = 10
        listing = store.list()
        rounds = fake.requests_to("GET", "/calendarView/delta")
        assert len(rounds) == 3  # 10 + 10 + 5, following @odata.nextLink
        assert [("$skiptoken" in r["params"]) for r in rounds] == [False, True, True]
        assert set(listing.etags) == set(ids) and listing.token and "$deltatoken=" in listing.token
        assert all(r["headers"].get("Prefer", "").startswith('outlook.timezone="UTC"') for r in rounds)
        moved = fake.patch_event(ids[0], {"subject": "Moved"})
        fake.delete_event(ids[1])
        fake.patch_event(ids[2], {"start": {"dateTime": "2028-03-01T08:00:00.0000000", "timeZone": "UTC"},
                                  "end": {"dateTime": "2028-03-01T09:00:00.0000000", "timeZone": "UTC"}})
        before = len(fake.log)
        changes = store.changes_since(listing.token)
        assert len(fake.log) - before == 1  # one page: the changes only
        assert changes.changed == {ids[0]: moved["@odata.etag"]}
        assert changes.deleted == {ids[1], ids[2]}  # deleted; moved out of the window
        assert store.changes_since(changes.token).changed == {}


def test_a_token_of_another_calendar_or_host_is_refused_without_a_request(graph: ServedGraph) -> None:
    with open_fake_graph_store(graph, window=WINDOW) as store:
        before = len(graph.fake.log)
        for bad in ("https://evil.example/v1.0/me/calendar/calendarView/delta?$deltatoken=x",
                    graph.url + "/v1.0/me/calendars/other/calendarView/delta?$deltatoken=x"):
            with pytest.raises(InvalidSyncToken):
                store.changes_since(bad)
        assert len(graph.fake.log) == before  # the bearer token went nowhere


def test_410_means_one_full_resync_without_duplicates(graph: ServedGraph) -> None:
    fake = graph.fake
    first = fake.put_event(at("2027-03-16", 11), at("2027-03-16", 12))
    with open_fake_graph_store(graph, window=WINDOW) as store:
        listing = store.list()
        assert listing.token
        second = fake.put_event(at("2027-03-17", 11), at("2027-03-17", 12))
        fake.expire_delta_tokens()
        with pytest.raises(InvalidSyncToken):
            store.changes_since(listing.token)
        before = len(fake.log)
        changed = read_changes(store, sync_token=listing.token, ctag=None, known=dict(listing.etags))
    assert changed is not None and changed.full and not changed.deleted
    assert set(changed.etags) == {first["id"], second["id"]}
    assert set(changed.data) == {second["id"]}  # the unchanged one is not read again
    assert [r["status"] for r in fake.log[before:] if "delta" in r["path"]] == [410, 200]


def test_moved_events_are_read_at_the_right_instant_in_the_organisers_zone(graph: ServedGraph) -> None:
    fake = graph.fake
    event = fake.put_event(at("2027-01-04", 8), at("2027-01-04", 9), zone="W. Europe Standard Time")
    with open_fake_graph_store(graph, window=WINDOW) as store:
        token = store.list().token
        assert token
        eastern = "Eastern Standard Time"
        graph_utc = "tzone://Microsoft/Utc"
        cases: list[tuple[dict[str, Any], bytes, datetime | None]] = [
            # the move made in Outlook (times in UTC, as Graph answers), and what calsync reads
            ({"start": utc("2027-07-05T07:00:00"), "end": utc("2027-07-05T08:00:00")},  # summer time
             b"DTSTART;TZID=Europe/Berlin:20270705T090000", datetime(2027, 7, 5, 7, tzinfo=UTC)),
            ({"start": utc("2027-03-29T07:00:00"), "end": utc("2027-03-29T08:00:00"),
              "originalStartTimeZone": eastern, "originalEndTimeZone": eastern},
             b"DTSTART;TZID=America/New_York:20270329T030000", datetime(2027, 3, 29, 7, tzinfo=UTC)),
            ({"originalStartTimeZone": graph_utc, "originalEndTimeZone": graph_utc},
             b"DTSTART:20270329T070000Z", datetime(2027, 3, 29, 7, tzinfo=UTC)),
            ({"isAllDay": True, "start": utc("2027-04-02T00:00:00"), "end": utc("2027-04-03T00:00:00")},
             b"DTSTART;VALUE=DATE:20270402", None),
        ]
        for changes, expected_line, instant in cases:
            fake.patch_event(event["id"], changes)
            delta = store.changes_since(token)
            token = delta.token
            assert set(delta.changed) == {event["id"]}
            body = store.get(event["id"]).body
            assert expected_line in body, body
            if instant is not None:
                assert start_of(body) == instant
                assert b"BEGIN:VTIMEZONE" in body or b"Z\r\n" in body


def test_a_moved_occurrence_of_a_series_is_one_changed_item(graph: ServedGraph) -> None:
    fake = graph.fake
    master = "AAMkAGseries"
    weeks = [fake.put_event(at("2027-03-01", 8) + timedelta(weeks=i),
                            at("2027-03-01", 9) + timedelta(weeks=i),
                            zone="W. Europe Standard Time", type="occurrence", seriesMasterId=master,
                            originalStart=f"2027-03-{1 + 7 * i:02d}T08:00:00Z") for i in range(4)]
    with open_fake_graph_store(graph, window=WINDOW) as store:
        listing = store.list()
        assert set(listing.etags) == {w["id"] for w in weeks}
        assert listing.token
        fake.patch_event(weeks[2]["id"], {"type": "exception", "start": utc("2027-03-16T13:00:00"),
                                          "end": utc("2027-03-16T14:00:00")})
        changes = store.changes_since(listing.token)
        assert set(changes.changed) == {weeks[2]["id"]} and not changes.deleted
        assert b"DTSTART;TZID=Europe/Berlin:20270316T140000" in store.get(weeks[2]["id"]).body
    busy = graph_busy_blocks(fake.mailbox.events.values(),
                             BusyOptions(datetime(2027, 3, 1, tzinfo=UTC), datetime(2027, 4, 1, tzinfo=UTC)))
    starts = [s for s, _e in busy.intervals]
    assert datetime(2027, 3, 15, 8, tzinfo=UTC) not in starts  # moved away from here
    assert datetime(2027, 3, 16, 13, tzinfo=UTC) in starts
    assert datetime(2027, 3, 22, 8, tzinfo=UTC) in starts


def test_busy_semantics_follow_show_as_cancellation_responses_and_all_day_policy(graph: ServedGraph) -> None:
    fake = graph.fake
    day = "2027-05-03"

    def put(hour: int, **more: Any) -> None:
        fake.put_event(at(day, hour), at(day, hour, 30), **more)

    put(6, showAs="free")
    put(7, showAs="workingElsewhere")
    put(8, showAs="tentative")
    put(9, showAs="busy")
    put(10, showAs="oof")
    put(11, isCancelled=True)
    put(12, responseStatus={"response": "declined", "time": "2027-05-01T00:00:00Z"})
    put(13, responseStatus={"response": "accepted", "time": "2027-05-01T00:00:00Z"})
    fake.put_event(at("2027-05-04", 0), at("2027-05-05", 0), isAllDay=True)
    window = (datetime(2027, 5, 1, tzinfo=UTC), datetime(2027, 5, 10, tzinfo=UTC))
    events = list(fake.mailbox.events.values())
    starts = sorted(s for s, _e in graph_busy_blocks(events, BusyOptions(*window)).intervals)
    assert starts == [at(day, 8), at(day, 9), at(day, 10), at(day, 13), datetime(2027, 5, 4, tzinfo=UTC)]
    ignored = graph_busy_blocks(events, BusyOptions(*window, all_day="ignore")).intervals
    assert datetime(2027, 5, 4, tzinfo=UTC) not in [s for s, _e in ignored]


def test_writes_are_conditional_and_a_retried_create_makes_no_second_event(graph: ServedGraph) -> None:
    fake = graph.fake
    with open_fake_graph_store(graph, window=WINDOW) as store:
        first = store.create("b.ics", booking("b-1"))
        posted = fake.requests_to("POST", "/events")[0]["body"]
        assert posted["transactionId"] == transaction_id_for("b-1")
        body = store.get(first.href).body
        assert b"UID:b-1" in body and b"X-CALSYNC-APPOINTMENT:42" in body
        # A POST whose answer was lost, sent again: Graph returns the event made the first time.
        again = store.api.call("POST", store.api.url("/me/calendar/events"), body=posted)
        assert again.status_code == 201 and again.json()["id"] == first.href
        assert len(fake.mailbox.events) == 1
        fake.patch_event(first.href, {"subject": "Moved in Outlook"})
        with pytest.raises(PreconditionFailed):
            store.update(first.href, booking("b-1", "20270104T100000Z", "20270104T110000Z"), first.etag)
        with pytest.raises(PreconditionFailed):
            store.delete(first.href, first.etag)
        assert [r["status"] for r in fake.log if r["method"] in ("PATCH", "DELETE")] == [412, 412]
        assert fake.requests_to("PATCH")[0]["headers"]["If-Match"] == first.etag
        assert fake.mailbox.events[first.href]["subject"] == "Moved in Outlook"  # never overwritten


def test_429_and_503_wait_for_retry_after_then_give_up_with_a_named_error(graph: ServedGraph) -> None:
    fake = graph.fake
    slept: list[float] = []
    with open_fake_graph_store(graph, window=WINDOW, sleep=slept.append) as store:
        fake.fail_next(429, retry_after="7")
        fake.fail_next(503, retry_after="2")
        assert store.list().token
        assert slept == [7.0, 2.0]
        fake.fail_next(429, retry_after="5", times=4)
        with pytest.raises(RateLimited) as limited:
            store.list()
        assert limited.value.retry_after == 5.0 and "slow down" in str(limited.value)


def test_at_most_four_requests_per_mailbox_at_once(graph: ServedGraph) -> None:
    fake = graph.fake
    event = fake.put_event(at("2027-02-01", 8), at("2027-02-01", 9))
    # Each request stays open a second, so the threads' arrivals (each sets up its store first)
    # overlap however busy the machine is; at 0.15 s a loaded CI worker could spread them out.
    fake.latency = 1.0
    errors: list[BaseException] = []

    def read(mailbox: str) -> None:
        try:
            with open_fake_graph_store(graph, window=WINDOW, mailbox=mailbox) as store:
                store.get(event["id"])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(f"{graph.url} anna",)) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert fake.max_in_flight == 4  # parallel, and never more than the cap (the fake has 16 threads)
    fake.max_in_flight = 0
    others = [threading.Thread(target=read, args=(f"{graph.url} staff-{i}",)) for i in range(6)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()
    assert fake.max_in_flight > 4  # the cap is per mailbox, not per process


def test_an_expired_access_token_is_refreshed_once_and_rotated(graph: ServedGraph) -> None:
    fake = graph.fake
    access, refresh = fake.grant()
    seen: list[Tokens] = []
    fake.expire_access_tokens()
    with open_fake_graph_store(graph, window=WINDOW, tokens=Tokens(access, refresh, 4e9)) as store:
        store.api._on_tokens = seen.append
        assert store.list().token
    assert [r["status"] for r in fake.log] == [401, 200]
    assert len(seen) == 1 and seen[0].refresh_token not in (None, refresh)  # the rotated one is kept


def test_an_expired_refresh_token_asks_for_a_reconnect(graph: ServedGraph) -> None:
    fake = graph.fake
    access, refresh = fake.grant()
    fake.expire_refresh_tokens()  # AADSTS700082: 90 days unused
    with (open_fake_graph_store(graph, window=WINDOW, tokens=Tokens(access, refresh, 4e9)) as store,
          pytest.raises(ReconnectNeeded) as reconnect):
        store.list()
    assert reconnect.value.kind == "reconnect" and "connect Microsoft 365 again" in str(reconnect.value)


def test_a_mailbox_outside_the_allowed_scope_is_a_sentence(graph: ServedGraph) -> None:
    graph.fake.refused_users.add("ceo@example.com")
    with (open_fake_graph_store(graph, window=WINDOW, user="ceo@example.com") as store,
          pytest.raises(StoreUnavailable) as refused):
        store.list()
    assert refused.value.kind == "auth" and "ErrorAccessDenied" in str(refused.value)
    with open_fake_graph_store(graph, window=WINDOW, user="anna@example.com") as store:
        assert store.list().token  # an allowed mailbox, by its address
    assert graph.fake.log[-1]["path"] == "/v1.0/users/anna@example.com/calendar/calendarView/delta"


def _signed_in(graph: ServedGraph, url: str) -> dict[str, str]:
    """The sign-in page approved at once: the query the fake sends the browser back with."""
    back = niquests.get(url, allow_redirects=False, verify=graph.ca_file).headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlparse(back).query).items()}


def test_sign_in_through_msal_gives_tokens_and_the_calendars_with_their_roles(graph: ServedGraph) -> None:
    endpoints, limits = graph.endpoints(), FetchLimits()
    redirect_uri = "https://calsync.example/connect/microsoft/callback"
    sealed: list[dict[str, Any]] = []

    def seal(flow: dict[str, Any]) -> str:  # calsync's StateSealer in the web flow
        sealed.append(flow)
        return f"s{len(sealed)}"

    url = sign_in_url(endpoints, CLIENT, redirect_uri=redirect_uri, seal=seal, allow_private=True,
                      limits=limits)
    assert graph.fake.discovered == 1  # msal read the tenant's OpenID configuration first
    asked = parse_qs(urlparse(url).query)
    assert urlparse(url).path == "/common/oauth2/v2.0/authorize" and asked["prompt"] == ["select_account"]
    assert asked["code_challenge_method"] == ["S256"] and "offline_access" in asked["scope"][0].split()
    assert asked["state"] == ["s1"] and asked["redirect_uri"] == [redirect_uri]
    flow = sealed[0]  # verifier and nonce: only in the sealed state, never in the address
    assert s256_challenge(flow["code_verifier"]) == asked["code_challenge"][0]
    assert flow["code_verifier"] not in url and flow["nonce"] not in url
    answer = _signed_in(graph, url)
    assert answer["state"] == "s1"
    with pytest.raises(ReconnectNeeded):  # a verifier that does not match the challenge
        finish_sign_in(endpoints, CLIENT, flow={**flow, "code_verifier": new_pkce().verifier}, state="s1",
                       answer=answer, allow_private=True, limits=limits)
    with pytest.raises(ReconnectNeeded):  # an ID token whose nonce is not the flow's
        finish_sign_in(endpoints, CLIENT, flow={**flow, "nonce": "another"}, state="s1",
                       answer=_signed_in(graph, url), allow_private=True, limits=limits)
    tokens = finish_sign_in(endpoints, CLIENT, flow=flow, state="s1", answer=_signed_in(graph, url),
                            allow_private=True, limits=limits)
    assert tokens.refresh_token and tokens.access_token in graph.fake.access
    calendars = list_calendars(endpoints, CLIENT, tokens, mailbox="zoe", allow_private=True, limits=limits)
    assert [(c.name, c.writable, c.primary) for c in calendars] == [("Calendar", True, True),
                                                                   ("Team holidays", False, False)]


def test_the_sign_in_service_is_https_with_a_verified_certificate(graph: ServedGraph) -> None:
    def sign_in(endpoints: MicrosoftEndpoints) -> str:
        return sign_in_url(endpoints, CLIENT, redirect_uri="https://calsync.example/cb", seal=lambda _f: "s",
                           allow_private=True, limits=FetchLimits())

    with pytest.raises(StoreUnavailable, match="CALSYNC_MICROSOFT_LOGIN_BASE_URL"):  # msal: https only
        sign_in(replace(graph.endpoints(), login_base=graph.url.replace("https://", "http://")))
    with pytest.raises(StoreUnavailable) as untrusted:  # the fake's CA is not the system's
        sign_in(replace(graph.endpoints(), ca_file=None))
    assert untrusted.value.kind == "tls" and graph.fake.discovered == 0
