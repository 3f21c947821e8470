"""Loading a calendar's items: one calendar-multiget REPORT per batch, not a GET per item (a first
sync of thousands of events must fit in the connection's lease)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync.bench.twoway import PASSWORD, SERVERS, USER, CalDAVServer
from calsync.feeds.calendars import caldav_store
from calsync.feeds.calendars.caldav_store import open_caldav_store
from calsync.feeds.calendars.changes import ChangeSet, read_changes
from calsync.feeds.calendars.store import StoreAddress
from calsync.feeds.sources.fetch import FetchLimits


@pytest.fixture(params=sorted(SERVERS))
def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CalDAVServer]:
    server = SERVERS[request.param](tmp_path)
    try:
        yield server
    finally:
        server.close()


def _read(server: CalDAVServer, known: dict[str, str]) -> ChangeSet | None:
    address = StoreAddress(server.calendar_url, USER, PASSWORD)
    with open_caldav_store(address, allow_private=True, limits=FetchLimits()) as store:
        return read_changes(store, sync_token=None, ctag=None, known=known)


def test_new_items_are_loaded_by_multiget_in_batches(
    recorded: CalDAVServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caldav_store, "MULTIGET_BATCH", 3)
    calendar = recorded.make_calendar()
    for i in range(8):
        start = datetime(2027, 1, 4, 9, tzinfo=UTC) + timedelta(days=i)
        calendar.save_event(dtstart=start, dtend=start + timedelta(hours=1), summary=f"E{i}", uid=f"u{i}")
    mark = recorded.recorder.mark()
    listing = _read(recorded, known={})
    assert listing is not None and len(listing.data) == 8
    assert all(b"BEGIN:VEVENT" in body for body in listing.data.values())
    methods = [r.method for r in recorded.recorder.since(mark) if r.status < 400]
    # CTag PROPFIND, the listing REPORT, then 3 multiget REPORTs (3 + 3 + 2 items); no GETs.
    assert methods.count("REPORT") == 1 + 3 and "GET" not in methods
    # Only what changed is loaded again.
    known = dict(listing.etags)
    changed = next(iter(known))
    known[changed] = '"stale"'
    mark = recorded.recorder.mark()
    again = _read(recorded, known=known)
    assert again is not None and set(again.data) == {changed}
    assert "GET" in [r.method for r in recorded.recorder.since(mark)]  # a batch of one: a plain GET
