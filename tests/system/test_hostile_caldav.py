"""Hostile CalDAV servers (issue 7; docs/protocol.md "Server XML is untrusted" and the fetch caps).

Each misbehaviour of tests/hostile_servers.py meets a connection that was added while its
server still behaved. The sync ends in a stored error sentence (not a traceback), within the
caps (bytes read, time, items), with the lease released; a healthy Radicale connection synced
next in the same process — and through the real queue, by the same worker thread — is
unaffected. Adding or discovering a calendar on such a server is refused with a sentence.
Linked calendars whose ETags change on every request neither loop nor re-push.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from flask import Flask
from lxml import etree
from sqlalchemy import inspect, select, text

from calsync.feeds.accounts.admins import get_or_create_company
from calsync.feeds.calendars.connections import ConnectionInput, create_connection
from calsync.feeds.calendars.sync import sync_connection
from calsync.feeds.scheduling.directory import create_staff
from calsync.feeds.settings import Settings
from calsync.feeds.sources import caldav_source
from calsync.feeds.sources.fetch import FetchLimits
from calsync.models import Appointment, BusyBlock, Conflict, Connection, LinkedItem, OutboxEmail
from tests.clock import day_at
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, iso
from tests.hostile_servers import (
    BILLION_LAUGHS,
    EtagFlappingProxy,
    HostileCalDAV,
    external_entity_document,
)
from tests.linked_helpers import Linked, at
from tests.servers import CalDAVServer, CalendarHTTPServer
from tests.waiting import wait_until

MB = 1024 * 1024
# Small caps so each case ends in seconds: an answer of at most 1 MB, 2 s per request.
LIMITS = FetchLimits(
    max_bytes=MB, total_seconds=2.0, connect_seconds=2.0, read_seconds=1.5, session_seconds=4.0
)

# behaviour → the kind of error it must end in
CASES = [
    ("billion_laughs", "unsafe"),
    ("external_entity", "unsafe"),
    ("endless_body", "too_large"),
    ("endless_401", "too_large"),
    ("redirect_loop", "redirects"),
    ("drip", "timeout"),
    ("huge_listing", "too_large"),
    ("invalid_utf8_xml", "unreadable"),
]
# The ones that hit every answer, so discovery and the check on adding meet them too.
EVERY_ANSWER = ["billion_laughs", "external_entity", "endless_body", "endless_401", "redirect_loop", "drip"]
CANARY_TEXT = "calsync-canary-7d1e0f"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_networks": True})


@pytest.fixture
def canary_file(tmp_path: Path) -> Path:
    """A local file that an external entity would pull in: its content must appear nowhere."""
    path = tmp_path / "canary.txt"
    path.write_text(CANARY_TEXT)
    return path


@pytest.fixture
def dtd_server() -> Iterator[CalendarHTTPServer]:
    """Where an external DTD would be fetched from: it must receive nothing."""
    server = CalendarHTTPServer()
    server.add("/evil.dtd", b'<!ENTITY leak "leaked">')
    yield server
    server.close()


def assert_sentence(message: str | None) -> None:
    """A sentence for an admin: no traceback, no repr, no markup, no body."""
    assert message, message
    assert (message[0].isupper() or message[0].isdigit()) and message.rstrip().endswith((".", ")")), message
    for fragment in ("Traceback", "Error(", "Exception", "<", "0x", "lol", CANARY_TEXT):
        assert fragment not in message, message
    assert len(message) < 300, message


class World:
    """A staff member, the app's sync context with small caps, and connections."""

    def __init__(self, app: Flask, radicale: CalDAVServer, limits: FetchLimits = LIMITS) -> None:
        self.app = app
        self.services = app.extensions["calsync"]
        self.services.sync = replace(self.services.sync, limits=limits)
        with self.services.sessions.begin() as s:
            company = get_or_create_company(s, "Hostile Co", "Europe/Berlin")
            self.staff_id = create_staff(
                s, company, name="Zoë", email="z@example.com", timezone="Europe/Berlin", working_hours=ALL_DAY
            ).id
        # The healthy neighbour: one busy event on Radicale.
        cal = radicale.calendar()
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        cal.save_event(dtstart=start, dtend=start + timedelta(hours=1), summary="Busy", uid="healthy-1")
        self.healthy = self.connect(radicale.url_of(), radicale.username, radicale.password)

    def connect(self, url: str, username: str = "zoe", password: str = "secret") -> int:  # noqa: S107
        """Add a CalDAV connection the way the API does (with the server checked)."""
        with self.services.sessions.begin() as s:
            company = get_or_create_company(s)
            conn = create_connection(
                s,
                company,
                self.services.vault,
                self.staff_id,
                ConnectionInput(kind="caldav", url=url, username=username, password=password),
                allow_private=True,
            )
            return conn.id

    def sync(self, connection_id: int):  # type: ignore[no-untyped-def]
        return sync_connection(self.services.sync, connection_id)

    def connection(self, connection_id: int) -> Connection:
        with self.services.sessions() as s:
            conn = s.get(Connection, connection_id)
            assert conn is not None
            return conn

    def busy_count(self, connection_id: int) -> int:
        with self.services.sessions() as s:
            return len(s.scalars(select(BusyBlock).where(BusyBlock.connection_id == connection_id)).all())

    def database_text(self) -> str:
        """Every row of every table, as text (where a leaked file would end up)."""
        parts = []
        with self.services.engine.connect() as c:
            for table in inspect(c).get_table_names():
                # Table names from the database itself, not from input.
                query = text(f'SELECT * FROM "{table}"')  # noqa: S608
                parts += [repr(tuple(row)) for row in c.execute(query)]
        return "\n".join(parts)


def hostile_world(
    app: Flask,
    radicale: CalDAVServer,
    make: Callable[..., HostileCalDAV],
    behaviour: str,
    canary_file: Path,
    dtd_url: str,
) -> tuple[World, HostileCalDAV, int]:
    # The huge listing must end as too_large whatever the machine's load: its 25,000 items are
    # made and read in this process, so it gets time as well as bytes.
    huge = replace(LIMITS, max_bytes=10 * MB, total_seconds=10.0, read_seconds=10.0, session_seconds=20.0)
    limits = huge if behaviour == "huge_listing" else LIMITS
    world = World(app, radicale, limits)
    items = 25_000 if behaviour == "huge_listing" else 2
    server = make("none", canary_file=canary_file, dtd_url=dtd_url, items=items)
    cid = world.connect(server.calendar_url)
    server.behaviour = behaviour  # it turns hostile after it was added
    server.requests.clear()
    return world, server, cid


def assert_failed_within_the_caps(
    world: World, server: HostileCalDAV, cid: int, behaviour: str, kind: str
) -> None:
    conn = world.connection(cid)
    assert (conn.status, conn.last_error_kind, conn.consecutive_failures) == ("error", kind, 1)
    assert_sentence(conn.last_error)
    assert (conn.lease_owner, conn.lease_until) == (None, None)
    if behaviour == "drip":
        # The answer (about 1,000 bytes, one a second) was abandoned at the 2 s deadline.
        assert server.sent <= LIMITS.total_seconds / server.drip_seconds + 2
        assert server.hung_up.wait(30)
    if behaviour in ("endless_body", "endless_401"):
        # Reading stopped at the 1 MB cap; what else was sent sat in the sockets' buffers.
        assert server.hung_up.wait(30)
        assert server.sent < 32 * MB
    if behaviour == "redirect_loop":
        assert len(server.requests) == LIMITS.max_redirects + 1
    if behaviour in ("billion_laughs", "external_entity"):
        assert len(server.requests) == 1  # refused at the first answer
    if behaviour == "huge_listing":
        assert [m for m, _p in server.requests] == ["PROPFIND", "REPORT"]  # no item was loaded


@pytest.mark.parametrize(("behaviour", "kind"), CASES)
def test_a_hostile_server_ends_in_a_sentence_and_the_neighbour_syncs(
    app: Flask,
    radicale: CalDAVServer,
    hostile_caldav: Callable[..., HostileCalDAV],
    canary_file: Path,
    dtd_server: CalendarHTTPServer,
    caplog: pytest.LogCaptureFixture,
    behaviour: str,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    world, server, cid = hostile_world(
        app, radicale, hostile_caldav, behaviour, canary_file, dtd_server.base_url + "/evil.dtd"
    )
    tracemalloc.start()
    try:
        outcome = world.sync(cid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.status == "error" and outcome.error == world.connection(cid).last_error
    assert_failed_within_the_caps(world, server, cid, behaviour, kind)
    # Memory stays within a small multiple of the answer cap (10 MB for the huge listing).
    assert peak < 4 * world.services.sync.limits.max_bytes, peak
    # Nothing was fetched from the DTD's address, and the local file went nowhere.
    assert dtd_server.hits == {}
    assert CANARY_TEXT not in world.database_text()
    assert CANARY_TEXT not in caplog.text
    # The healthy connection, next in the same process, is unaffected.
    assert world.sync(world.healthy).status == "ok"
    assert world.busy_count(world.healthy) == 1
    # And the broken one tries again (and fails the same way) without anything held over.
    assert world.sync(cid).status in ("error", "skipped")


@pytest.mark.parametrize(("behaviour", "kind"), CASES)
def test_the_queue_worker_survives_a_hostile_server(
    app: Flask,
    radicale: CalDAVServer,
    hostile_caldav: Callable[..., HostileCalDAV],
    canary_file: Path,
    dtd_server: CalendarHTTPServer,
    behaviour: str,
    kind: str,
) -> None:
    """The real queue job on the embedded (SQLite) queue, one worker thread: the hostile sync,
    then the healthy one, then the healthy one again — all by the same thread."""
    world, server, cid = hostile_world(
        app, radicale, hostile_caldav, behaviour, canary_file, dtd_server.base_url + "/evil.dtd"
    )
    jobs = world.services.jobs
    consumer = jobs.start_in_background(workers=1, periodic=False)
    try:
        jobs.enqueue_sync(cid)
        jobs.enqueue_sync(world.healthy)
        wait_until(lambda: world.connection(world.healthy).status == "ok",
                   "the queue to sync the healthy neighbour", limit=120)
        first_success = world.connection(world.healthy).last_success_at
        assert_failed_within_the_caps(world, server, cid, behaviour, kind)
        with world.services.sessions.begin() as s:
            s.get(Connection, world.healthy).last_success_at = None
        jobs.enqueue_sync(world.healthy)  # the worker is still there to take it
        wait_until(lambda: world.connection(world.healthy).last_success_at is not None,
                   "the queue to finish the healthy neighbour's sync", limit=120)
        assert first_success is not None
    finally:
        consumer.stop(graceful=True)
    assert world.busy_count(world.healthy) == 1


# --- adding and discovering ---------------------------------------------------------------------------


@pytest.fixture
def small_interactive_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery and the check on adding run with default caps (30 s a request); the same caps
    as the syncs here keep these tests short."""
    monkeypatch.setattr(
        caldav_source,
        "FetchLimits",
        partial(
            FetchLimits,
            **{
                f: getattr(LIMITS, f)
                for f in ("max_bytes", "total_seconds", "connect_seconds", "read_seconds", "session_seconds")
            },
        ),
    )


@pytest.mark.parametrize("behaviour", EVERY_ANSWER)
def test_discovering_or_adding_a_hostile_server_is_refused_with_a_sentence(
    api: Api,
    hostile_caldav: Callable[..., HostileCalDAV],
    canary_file: Path,
    dtd_server: CalendarHTTPServer,
    small_interactive_limits: None,
    behaviour: str,
) -> None:
    server = hostile_caldav(behaviour, canary_file=canary_file, dtd_url=dtd_server.base_url + "/evil.dtd")
    staff = api.make_staff(working_hours=ALL_DAY)
    found = api.post(
        "/caldav/discover", {"url": server.base_url + "/dav/", "username": "zoe", "password": "secret"}
    )
    added = api.post(
        f"/staff/{staff['id']}/connections",
        {"kind": "caldav", "url": server.calendar_url, "username": "zoe", "password": "secret"},
    )
    for resp in (found, added):
        assert resp.status_code == 422, resp.get_json()
        assert_sentence(resp.get_json()["error"])
        assert CANARY_TEXT not in resp.get_data(as_text=True)
    assert api.get(f"/staff/{staff['id']}/connections").get_json()["connections"] == []
    assert dtd_server.hits == {}


# --- the parser itself ------------------------------------------------------------------------------


def test_caldavs_parser_neither_expands_entities_nor_reads_files_nor_fetches(
    canary_file: Path, dtd_server: CalendarHTTPServer
) -> None:
    """The second lock: had a DTD slipped past the session's refusal, caldav's own parser
    (resolve_entities=False, no_network=True) still neither expands nor fetches anything."""
    from caldav.response import DAVResponse

    xxe = DAVResponse.from_bytes(external_entity_document(canary_file, dtd_server.base_url + "/evil.dtd"))
    assert xxe.tree is not None
    assert CANARY_TEXT.encode() not in etree.tostring(xxe.tree)
    assert dtd_server.hits == {}
    try:
        laughs = DAVResponse.from_bytes(BILLION_LAUGHS)
    except etree.XMLSyntaxError as exc:  # libxml2's amplification limit stops it outright
        assert "amplification" in str(exc)
    else:
        assert laughs.tree is None or len(etree.tostring(laughs.tree)) < 10_000


def test_an_item_that_is_not_utf8_still_counts_as_busy(
    app: Flask, radicale: CalDAVServer, hostile_caldav: Callable[..., HostileCalDAV]
) -> None:
    """Latin-1 calendars are common; caldav gives up on them. The busy time counts all the same
    (its title is never used), and the rest of the calendar is read as usual."""
    world = World(app, radicale)
    server = hostile_caldav("invalid_utf8", items=3)
    cid = world.connect(server.calendar_url)
    outcome = world.sync(cid)
    assert outcome.status == "ok", outcome
    assert world.busy_count(cid) == 3
    assert world.sync(world.healthy).status == "ok"


# --- ETags that change on every request ---------------------------------------------------------------


class FlappingLinked(Linked):
    """A staff member whose linked calendar (two-way sync on) sits behind an ETag-flapping proxy."""

    def __init__(self, app: Flask, api: Api, radicale: CalDAVServer, proxy: EtagFlappingProxy) -> None:
        self.proxy = proxy
        super().__init__(app, api, radicale, working_hours=ALL_DAY,
                         url=proxy.base_url + radicale.home + "work/")

    def counts(self) -> tuple[int, int, int]:
        """(appointment revisions summed, open conflicts, emails written)."""
        with self.services.sessions() as s:
            revisions = sum(s.scalars(select(Appointment.revision)).all())
            conflicts = len(s.scalars(select(Conflict)).all())
            emails = len(s.scalars(select(OutboxEmail)).all())
        return revisions, conflicts, emails

    def only_item(self) -> LinkedItem:
        with self.services.sessions() as s:
            return s.scalars(select(LinkedItem)).one()


def test_flapping_etags_neither_loop_nor_re_push(app: Flask, api: Api, radicale: CalDAVServer) -> None:
    """Every listing shows every item "changed" (new ETag, no sync token): each sync reads them
    again, finds the content and times unchanged, and writes nothing."""
    proxy = EtagFlappingProxy(radicale.base_url, honour_if_match=True, sync_tokens=False)
    try:
        linked = FlappingLinked(app, api, radicale, proxy)
        linked.book(at(2, 10))
        assert linked.sync().status == "ok"
        assert proxy.count("PUT") == 1
        before = linked.counts()
        for _ in range(4):
            listings = proxy.count("REPORT", 207)
            outcome = linked.sync()
            assert outcome.status in ("ok", "unchanged"), outcome
            assert proxy.count("REPORT", 207) > listings  # the whole calendar was listed again
        assert proxy.count("PUT") == 1  # never pushed again
        assert linked.counts() == before  # no reschedule, no conflict, no email
        assert linked.only_item().state == "synced"
        assert len(list(radicale.calendar("work").events())) == 1
    finally:
        proxy.close()


def test_an_if_match_that_never_matches_is_retried_with_backoff_not_in_a_loop(
    app: Flask, api: Api, radicale: CalDAVServer
) -> None:
    """A server whose ETags never match its own If-Match: each attempt is one write and one
    re-read-and-write (the 412 rule), then the copy waits for its backoff. The booking stays
    as the platform has it; nobody is emailed twice."""
    proxy = EtagFlappingProxy(radicale.base_url, honour_if_match=False, sync_tokens=False)
    try:
        linked = FlappingLinked(app, api, radicale, proxy)
        appt = linked.book(at(2, 10))
        assert linked.sync().status == "ok"  # created with If-None-Match: *, no ETag needed
        later = day_at(3, 14)
        resp = api.patch(
            f"/appointments/{appt['id']}", {"start": iso(later), "end": iso(later + timedelta(hours=1))}
        )
        assert resp.status_code == 200, resp.get_json()
        before = linked.counts()
        for attempt in range(1, 4):
            puts = proxy.count("PUT")
            outcome = linked.sync()
            assert outcome.status == "error"
            assert_sentence(outcome.error)
            assert proxy.count("PUT") - puts <= 2
            assert linked.only_item().attempts == attempt
            puts = proxy.count("PUT")
            assert linked.sync().status in ("error", "ok", "unchanged")
            assert proxy.count("PUT") == puts  # inside its backoff: not tried again
            linked.past_backoff()
        assert linked.counts() == before
        assert (
            api.get(f"/appointments/{appt['id']}")
            .get_json()["start"]
            .startswith(later.strftime("%Y-%m-%dT%H:%M"))
        )
        with linked.services.sessions() as s:
            assert s.get(Connection, linked.connection_id).lease_owner is None
    finally:
        proxy.close()
