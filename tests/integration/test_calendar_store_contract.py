"""One contract for every calendar store (feeds.calendars.store): the memory store and the
CalDAV store on Radicale and on Xandikos (and the Google and Microsoft Graph stores, on the
contract fakes of tests/fakes) must answer the same way, so sync and two-way sync, tested fast
on the memory store, hold on real servers too."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from calsync.feeds.calendars.caldav_store import open_caldav_store
from calsync.feeds.calendars.memory_store import MemoryStore
from calsync.feeds.calendars.store import (
    CalendarStore,
    InvalidSyncToken,
    ItemNotFound,
    PreconditionFailed,
    StoreAddress,
)
from calsync.feeds.sources.fetch import FetchLimits
from tests.fakes.google_calendar import open_fake_store, serve_google_fake
from tests.fakes.microsoft_graph import open_fake_graph_store, serve_graph_fake
from tests.servers import CalDAVServer


def event(uid: str, hour: int = 9, summary: str = "Haircut") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//calsync tests//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20270101T000000Z\r\nDTSTART:20270104T{hour:02d}0000Z\r\n"
        f"DTEND:20270104T{hour + 1:02d}0000Z\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


@pytest.fixture(params=["memory", "radicale", "xandikos", "google", "microsoft"])
def opened(request: pytest.FixtureRequest) -> Iterator[CalendarStore]:
    """A fresh, empty calendar as a store, kept open for the test (one conversation)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "google":
        with serve_google_fake() as served, open_fake_store(served) as google:
            yield google
        return
    if request.param == "microsoft":
        with serve_graph_fake() as graph, open_fake_graph_store(graph) as microsoft:
            yield microsoft
        return
    server: CalDAVServer = request.getfixturevalue(request.param)
    server.calendar("contract", "Contract")
    address = StoreAddress(server.url_of("contract"), server.username, server.password)
    with open_caldav_store(address, allow_private=True, limits=FetchLimits()) as store:
        yield store


@contextmanager
def refused(error: type[Exception]) -> Iterator[None]:
    with pytest.raises(error):
        yield


def test_create_then_get_list_and_read_back(opened: CalendarStore) -> None:
    written = opened.create("a.ics", event("a"))
    assert written.etag
    got = opened.get(written.href)
    assert b"UID:a" in got.body and got.etag == written.etag
    assert opened.list().etags == {written.href: written.etag}
    assert b"UID:a" in opened.get_many([written.href])[written.href].body


def test_create_where_an_item_is_fails_its_precondition(opened: CalendarStore) -> None:
    first = opened.create("a.ics", event("a"))
    with pytest.raises(PreconditionFailed) as failed:
        opened.create("a.ics", event("a", hour=10))  # If-None-Match: *
    assert failed.value.href == first.href
    assert b"T090000Z" in opened.get(first.href).body  # the first one is untouched


def test_update_and_delete_only_at_the_etag_last_seen(opened: CalendarStore) -> None:
    first = opened.create("a.ics", event("a"))
    second = opened.update(first.href, event("a", hour=11), first.etag)
    assert second.etag and second.etag != first.etag
    with refused(PreconditionFailed):
        opened.update(first.href, event("a", hour=12), first.etag)  # stale: someone else wrote
    with refused(PreconditionFailed):
        opened.delete(first.href, first.etag)
    assert b"T110000Z" in opened.get(first.href).body
    opened.delete(first.href, second.etag)
    with refused(ItemNotFound):
        opened.get(first.href)
    with refused(ItemNotFound):
        opened.delete(first.href, second.etag)


def test_missing_items_are_not_found_and_left_out_of_get_many(opened: CalendarStore) -> None:
    kept = opened.create("kept.ics", event("kept"))
    gone = opened.create("missing.ics", event("missing"))  # hrefs are opaque: one that was there
    opened.delete(gone.href, gone.etag)
    missing = gone.href
    with refused(ItemNotFound):
        opened.get(missing)
    assert set(opened.get_many([kept.href, missing])) == {kept.href}


def test_changes_since_a_token_report_adds_changes_and_deletions(opened: CalendarStore) -> None:
    a = opened.create("a.ics", event("a"))
    b = opened.create("b.ics", event("b"))
    start = opened.list()
    assert start.token, "both servers and the memory store have sync tokens"
    c = opened.create("c.ics", event("c"))
    a2 = opened.update(a.href, event("a", hour=14), a.etag)
    opened.delete(b.href, b.etag)
    changes = opened.changes_since(start.token)
    assert set(changes.changed) == {a.href, c.href}
    assert changes.changed[a.href] == a2.etag or changes.changed[a.href]  # a new version
    assert changes.changed[a.href] != a.etag
    assert changes.deleted == {b.href}
    assert changes.token != start.token
    again = opened.changes_since(changes.token)  # nothing since
    assert not again.changed and not again.deleted


def test_an_unknown_token_is_a_named_error(opened: CalendarStore) -> None:
    opened.create("a.ics", event("a"))
    token = opened.list().token
    assert token
    for bad in ("http://example.invalid/sync/42", token + "x"):
        with refused(InvalidSyncToken):
            opened.changes_since(bad)


def test_the_collection_tag_moves_with_a_write(opened: CalendarStore) -> None:
    before = opened.collection_tag()
    opened.create("a.ics", event("a"))
    after = opened.collection_tag()
    assert before is None or before != after


def test_an_expired_token_in_memory_is_the_same_named_error() -> None:
    store = MemoryStore()
    token = store.list().token
    assert token is not None
    store.put_directly("a.ics", event("a"))
    store.expire_tokens()
    with refused(InvalidSyncToken):
        store.changes_since(token)
    assert MemoryStore(supports_sync=False).list().token is None
