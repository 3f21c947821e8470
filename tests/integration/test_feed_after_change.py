"""The first GET after a change (issue 17): a segment rebuilt beside the previous one in memory,
the changed appointment rendered from one Core row, the body served as its pieces and joined
once served again, the lookup on connections set aside from the pool. Each must give exactly
the bytes of a render from nothing."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from psycopg.pq import PipelineStatus
from sqlalchemy import delete, select

from calsync.feeds.publishing import scope_changes, segments
from calsync.feeds.publishing.cache import BodyEntry
from calsync.feeds.publishing.feed_changes import feed_changes
from calsync.feeds.publishing.lookup_connections import lookup_connections
from calsync.feeds.publishing.prebuilt import Reads
from calsync.feeds.publishing.render import Variant, render_event
from calsync.feeds.publishing.token_rows import feed_lookup
from calsync.feeds.publishing.version import lookup_feed
from calsync.feeds.settings import Settings
from calsync.models import Appointment, FeedFragment, FeedSegment
from calsync.web import create_app
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, events_by_uid, iso, soon
from tests.waiting import wait_until

NOTES = "Allergic to ammonia; bring the voucher, please \\ thanks\nsecond line"


@pytest.fixture
def staff(api: Api) -> list[dict]:
    return [api.make_staff(name=f"Staff {i} Zoë", email=f"s{i}@example.com", working_hours=ALL_DAY,
                           timezone=("Europe/Berlin", "America/New_York")[i]) for i in range(2)]


def _book_some(api: Api, staff: list[dict]) -> list[dict]:
    booked = []
    for day in range(1, 7):
        for member in staff:
            resp = api.book(member["id"], iso(soon(day, 9 + day)), iso(soon(day, 10 + day)),
                            notes=NOTES * (day % 3), location="Torstraße 1, Berlin" if day % 2 else None)
            assert resp.status_code == 201, resp.get_json()
            booked.append(resp.get_json())
    return booked


def _get(client: Any, url: str, **headers: str) -> tuple[bytes, Any]:
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    body = response.data
    response.close()  # what a server does once the body is sent: the post-response work runs
    return body, response


def _from_nothing(settings: Settings, app: Flask, url: str) -> bytes:
    """The feed rendered by a process with nothing in memory and nothing in the shared tables."""
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(delete(FeedSegment))
        session.execute(delete(FeedFragment))
    other = create_app(settings, migrate=False)
    try:
        return _get(other.test_client(), url)[0]
    finally:
        other.extensions["calsync"].engine.dispose()


def test_every_first_get_after_a_change_equals_a_render_from_nothing(
        settings: Settings, app: Flask, api: Api, staff: list[dict], monkeypatch) -> None:
    booked = _book_some(api, staff)
    with app.extensions["calsync"].sessions() as session:
        company_id = session.scalar(select(Appointment.company_id).limit(1))
    url = api.feed_url("company", company_id)
    cold, _ = _get(api.client, url)
    assert cold == _from_nothing(settings, app, url)
    rendered: list[str] = []
    real = segments.render_event
    monkeypatch.setattr(segments, "render_event",
                        lambda appt, variant: rendered.append(appt.uid) or real(appt, variant))
    cold_builds: list[int] = []
    real_cold = segments._build_cold
    monkeypatch.setattr(segments, "_build_cold", lambda *a: cold_builds.append(1) or real_cold(*a))
    listed = _count(monkeypatch, segments._REVISIONS.values())  # the window listed, not the changes alone
    # Where the changes were read: with the staff rows (PostgreSQL; by the render, or sent ahead with
    # the token's row) or by a statement of their own.
    with_staff, alone = _calls(monkeypatch, scope_changes, "split"), _count(monkeypatch, [segments._CHANGED])
    postgres = app.extensions["calsync"].engine.dialect.name == "postgresql"
    first, second = booked[0], booked[1]

    def move(appt: dict, day: int, hour: int) -> Any:
        return api.patch(f"/appointments/{appt['id']}",
                         {"start": iso(soon(day, hour)), "end": iso(soon(day, hour + 1))})

    def twice(appt: dict, day: int, hour: int, other: dict, other_day: int, other_hour: int) -> Any:
        assert move(appt, day, hour).status_code == 200
        return move(other, other_day, other_hour)

    changes = [  # (what, the change, how many appointments it renders, whether the window is listed)
        ("moved later", lambda: move(first, 1, 20), 1, False),
        ("moved to another day: its place in the segment changes", lambda: move(first, 5, 1), 1, False),
        ("cancelled: leaves the feed", lambda: api.post(f"/appointments/{second['id']}/cancel"), 0, False),
        ("a new booking", lambda: api.book(staff[1]["id"], iso(soon(2, 3)), iso(soon(2, 4))), 1, False),
        ("moved out of the window", lambda: move(booked[4], 400, 10), 0, False),
        ("moved twice: the first change is hidden, so the window is listed",
         lambda: twice(first, 4, 2, first, 4, 3), 1, True),
        ("two appointments moved", lambda: twice(first, 4, 5, booked[2], 6, 3), 2, False),
        ("a rename: every appointment of the staff member renders again",
         lambda: api.patch(f"/staff/{staff[1]['id']}", {"name": "Renamed Zoë"}), 6, False),
        ("an email changed: the revision moves, no appointment does",
         lambda: api.patch(f"/staff/{staff[1]['id']}", {"email": "new@example.com"}), 0, True),
        ("moved after the rename", lambda: move(booked[3], 6, 4), 1, False),
    ]
    for what, change, renders, lists in changes:
        resp = change()
        assert resp.status_code in (200, 201), (what, resp.get_json())
        for seen in (rendered, cold_builds, listed, with_staff, alone):
            seen.clear()
        body, response = _get(api.client, url)
        assert response.headers["Content-Length"] == str(len(body)), what
        assert len(rendered) == renders and cold_builds == [], (what, rendered)  # beside the previous
        assert bool(listed) == lists, what
        # One statement read the staff and their changes on PostgreSQL (scope_changes.py).
        assert (len(with_staff), bool(alone)) == ((1, False) if postgres else (0, True)), what
        assert body == _from_nothing(settings, app, url), what
        packed, _ = _get(api.client, url, **{"Accept-Encoding": "gzip"})
        assert gzip.decompress(packed) == body, what
    by_uid = events_by_uid(body)
    assert second["uid"] not in by_uid and booked[4]["uid"] not in by_uid
    assert by_uid[first["uid"]]["SEQUENCE"] == 5  # moved five times


def _calls(monkeypatch, owner: Any, name: str) -> list[int]:
    """A list that grows by one each time `owner.name` is called."""
    calls: list[int] = []
    real = getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _count(monkeypatch, prebuilts: Any) -> list[int]:
    """A list that grows by one each time one of `prebuilts` runs."""
    calls: list[int] = []
    for prebuilt in prebuilts:
        monkeypatch.setattr(prebuilt, "all",
                            lambda *a, _all=prebuilt.all, **k: calls.append(1) or _all(*a, **k))
    return calls


def test_a_group_feed_after_its_members_change_equals_a_render_from_nothing(
        settings: Settings, app: Flask, api: Api, staff: list[dict], monkeypatch) -> None:
    """The staff a group feed asks about with their changes are those its last render showed
    (FeedCache.staff_of): a member added since is built apart, one removed is left out."""
    booked = _book_some(api, staff)
    group = api.post("/groups", {"name": "Team", "staff_ids": [staff[0]["id"]]}).get_json()
    url = api.feed_url("group", group["id"])
    _get(api.client, url)
    with_staff = _calls(monkeypatch, scope_changes, "split")
    steps = [
        ("a member added, another's appointment moved",
         lambda: api.patch(f"/groups/{group['id']}", {"staff_ids": [staff[0]["id"], staff[1]["id"]]}),
         booked[0]),
        ("the added member's appointment moved", None, booked[1]),
        ("the first member removed",
         lambda: api.patch(f"/groups/{group['id']}", {"staff_ids": [staff[1]["id"]]}), booked[3]),
    ]
    for hour, (what, membership, moved) in enumerate(steps, start=12):
        if membership is not None:
            assert membership().status_code == 200, what
        assert api.patch(f"/appointments/{moved['id']}",
                         {"start": iso(soon(20, hour)), "end": iso(soon(20, hour + 1))}).status_code == 200
        body, _ = _get(api.client, url)
        assert body == _from_nothing(settings, app, url), what
    assert bool(with_staff) == (app.extensions["calsync"].engine.dialect.name == "postgresql")
    assert events_by_uid(body).keys() >= {booked[1]["uid"], booked[3]["uid"]}
    assert booked[0]["uid"] not in events_by_uid(body)


def test_each_change_writes_the_revision_it_made_into_the_appointments_it_touched(
        app: Flask, api: Api, staff: list[dict]) -> None:
    """What lets a feed read the changes since a segment alone (segments._changes_since): each
    booking, move, cancellation and rename writes its staff member's new feed revision into
    every appointment it changed, in the same transaction."""
    from calsync.models import Staff

    def revisions() -> tuple[int, dict[int, int]]:
        with app.extensions["calsync"].sessions() as session:
            feed_revision = session.scalar(select(Staff.feed_revision).where(Staff.id == staff[0]["id"]))
            rows = session.execute(select(Appointment.id, Appointment.staff_revision)
                                   .where(Appointment.staff_id == staff[0]["id"])).all()
        return feed_revision, dict(rows)

    one = api.book(staff[0]["id"], iso(soon(1, 9)), iso(soon(1, 10))).get_json()
    two = api.book(staff[0]["id"], iso(soon(2, 9)), iso(soon(2, 10))).get_json()
    now, by_id = revisions()
    assert by_id == {one["id"]: now - 1, two["id"]: now}
    moved = api.patch(f"/appointments/{one['id']}", {"start": iso(soon(1, 11)), "end": iso(soon(1, 12))})
    assert moved.status_code == 200
    now, by_id = revisions()
    assert by_id == {one["id"]: now, two["id"]: now - 1}
    assert api.post(f"/appointments/{two['id']}/cancel").status_code == 200
    now, by_id = revisions()
    assert by_id == {one["id"]: now - 1, two["id"]: now}
    three = api.book(staff[0]["id"], iso(soon(3, 9)), iso(soon(3, 10))).get_json()
    before = revisions()
    refused = api.patch(f"/appointments/{one['id']}", {"start": iso(soon(3, 9)), "end": iso(soon(3, 10))})
    assert refused.status_code == 409 and revisions() == before  # a refused move writes nothing
    assert before[1][three["id"]] == before[0]
    assert api.patch(f"/staff/{staff[0]['id']}", {"name": "Another Name"}).status_code == 200
    now, by_id = revisions()
    assert now == before[0] + 1 and set(by_id.values()) == {now}


def test_a_new_body_goes_out_as_its_pieces_and_is_joined_when_served_again(app: Flask, api: Api,
                                                                           staff: list[dict]) -> None:
    """A new body is joined into one object only once it is served a second time: a feed that
    changes between fetches is served once per version, and its join was work for nothing."""
    booked = _book_some(api, staff)
    url = api.feed_url("staff", staff[0]["id"])
    _get(api.client, url)
    api.patch(f"/appointments/{booked[0]['id']}", {"start": iso(soon(1, 20)), "end": iso(soon(1, 21))})
    memory = app.extensions["calsync"].feed_cache.memory

    def entry() -> BodyEntry:
        (found,) = [v for v in memory._items.values() if isinstance(v, BodyEntry)]
        return found

    head = api.client.head(url)
    assert head.status_code == 200 and head.data == b""
    head.close()
    assert len(entry().pieces) == 3  # header, the one staff member's segment, footer: not joined
    response = api.client.get(url)  # served again, from memory
    assert response.headers["Content-Length"] == head.headers["Content-Length"] == str(len(response.data))
    assert len(entry().pieces) == 3 and b"".join(entry().pieces) == response.data
    response.close()
    assert entry().pieces == (response.data,)  # joined once this second answer was sent
    api.patch(f"/appointments/{booked[0]['id']}", {"start": iso(soon(1, 21)), "end": iso(soon(1, 22))})
    response = api.client.get(url)
    assert int(response.headers["Content-Length"]) == len(response.data)
    response.close()
    assert len(entry().pieces) == 3  # the first GET after a change: sent as its pieces, not joined
    _get(api.client, url, **{"Accept-Encoding": "gzip"})
    assert len(entry().pieces) == 3  # a gzip answer does not send the pieces: no reason to join
    body, _ = _get(api.client, url)
    assert entry().pieces == (body,)


def test_a_segment_whose_window_did_not_change_is_the_previous_bytes_themselves(
        app: Flask, api: Api, staff: list[dict], monkeypatch) -> None:
    """The staff member's revision moved (e.g. for an appointment outside the window) but
    nothing the segment shows changed: its rebuild renders nothing and copies nothing."""
    from sqlalchemy import update

    from calsync.models import Staff

    _book_some(api, staff)
    url = api.feed_url("staff", staff[0]["id"])
    before, response = _get(api.client, url)
    memory = app.extensions["calsync"].feed_cache.memory._items

    def segment() -> tuple[str, bytes]:
        ((key, found),) = [(k, v) for k, v in memory.items() if k.split(":")[0] == str(staff[0]["id"])]
        return key, found

    old_key, old = segment()
    rendered: list[str] = []
    real = segments.render_event
    monkeypatch.setattr(segments, "render_event",
                        lambda appt, variant: rendered.append(appt.uid) or real(appt, variant))
    with app.extensions["calsync"].sessions.begin() as session:
        session.execute(update(Staff).where(Staff.id == staff[0]["id"])
                        .values(feed_revision=Staff.feed_revision + 1))
    after, changed = _get(api.client, url)
    new_key, new = segment()
    assert changed.headers["ETag"] != response.headers["ETag"] and new_key != old_key
    assert after == before and rendered == []
    assert new is old


def test_the_changed_appointment_renders_from_its_row_as_from_the_orm(app: Flask, api: Api,
                                                                       staff: list[dict]) -> None:
    (booked,) = [api.book(staff[0]["id"], iso(soon(3)), iso(soon(3, 11)), notes=NOTES,
                          location="Room 2").get_json()]
    api.post(f"/appointments/{booked['id']}/cancel")
    services = app.extensions["calsync"]
    with Reads(services.engine, services.sessions) as reads, services.sessions() as session:
        appt = session.get(Appointment, booked["id"])
        for privacy in ("full", "limited", "busy"):
            for names_staff in (False, True):
                variant = Variant(privacy, names_staff)
                row = segments._ONE.first(reads, id=booked["id"], variant=variant.key)
                assert row is not None and row[0] == appt.revision
                assert render_event(segments._shown(row), variant) == render_event(appt, variant)


def test_a_segment_whose_appointment_vanished_meanwhile_is_served_but_not_kept(
        app: Flask, api: Api, staff: list[dict], monkeypatch) -> None:
    """Between the statement that lists a staff member's appointments and the one that reads the
    changed one, another request may delete it: the segment goes out without it, never kept.
    (Listing happens when the changes cannot be read alone: here the appointment moved twice,
    which hides its first change.)"""
    booked = _book_some(api, staff)
    url = api.feed_url("staff", staff[0]["id"])
    _get(api.client, url)
    api.patch(f"/appointments/{booked[0]['id']}", {"start": iso(soon(1, 19)), "end": iso(soon(1, 20))})
    api.patch(f"/appointments/{booked[0]['id']}", {"start": iso(soon(1, 20)), "end": iso(soon(1, 21))})
    real_first = segments._ONE.first

    def gone(reads: Reads, **params: Any) -> Any:
        return None if params["id"] == booked[0]["id"] else real_first(reads, **params)

    monkeypatch.setattr(segments._ONE, "first", gone)
    body, _ = _get(api.client, url)
    assert booked[0]["uid"] not in events_by_uid(body)
    memory = app.extensions["calsync"].feed_cache.memory._items
    assert body not in [b"".join(v.pieces) for v in memory.values() if isinstance(v, BodyEntry)]
    monkeypatch.undo()
    body, _ = _get(api.client, url)
    assert booked[0]["uid"] in events_by_uid(body)


@pytest.fixture
def unheard(settings: Settings) -> Settings:
    """PostgreSQL: every lookup reads its row (no LISTEN), as on SQLite when something committed."""
    return settings.model_copy(update={"feed_listen": False})


def test_lookups_survive_a_broken_set_aside_connection_and_dispose_closes_them(
        unheard: Settings, api: Api, staff: list[dict]) -> None:
    app = create_app(unheard, migrate=False)
    api = Api(app.test_client(), api.key)
    url = api.feed_url("staff", staff[0]["id"])
    engine = app.extensions["calsync"].engine
    stash = lookup_connections(engine)
    assert stash is not None
    _get(api.client, url)
    (aside,) = stash._idle
    connection = aside.connection
    connection.close()  # as a restarted database server leaves it
    body, _ = _get(api.client, url)  # read through the pool instead
    assert body.startswith(b"BEGIN:VCALENDAR")
    _get(api.client, url)
    fresh = stash._idle[0].connection
    assert fresh is not connection
    engine.dispose()
    assert stash._idle == []
    with pytest.raises(engine.dialect.loaded_dbapi.Error):
        fresh.cursor()
    assert _get(api.client, url)[0] == body
    engine.dispose()


def test_a_lookup_reuses_its_feed_only_once_the_second_of_the_change_is_over(app: Flask, api: Api,
                                                                             staff: list[dict]) -> None:
    """Last-Modified names the current second while the change's second lasts (version.py's
    last_modified): a feed made then is not reused later in that form."""
    url = api.feed_url("staff", staff[0]["id"])
    token = url.removeprefix("/feeds/").removesuffix(".ics")
    engine = app.extensions["calsync"].engine
    api.book(staff[0]["id"], iso(soon(3)), iso(soon(3, 11)))
    first = lookup_feed(engine, token, datetime.now(UTC))
    assert first is not None
    during = first.changed_at.replace(microsecond=999_999)
    at_once = lookup_feed(engine, token, during)
    assert at_once is not None and at_once.last_modified == during.replace(microsecond=0)
    later = first.changed_at + timedelta(seconds=5)
    settled = lookup_feed(engine, token, later)
    assert settled is not None and settled.last_modified > at_once.last_modified
    assert lookup_feed(engine, token, later + timedelta(seconds=1)) is settled  # reused


def sqlite_engine(app: Flask) -> bool:
    return bool(app.extensions["calsync"].engine.dialect.name == "sqlite")


def test_a_lookup_reads_the_token_row_again_only_after_a_commit(app: Flask, api: Api, staff: list[dict],
                                                                monkeypatch) -> None:
    """SQLite: a set-aside connection keeps the rows it read while its data_version stays the
    same, i.e. while no other connection committed anything (lookup_connections.Aside).
    PostgreSQL: the process keeps them until a change is heard or it commits itself."""
    from sqlalchemy import update

    from calsync.feeds.publishing import version
    from calsync.models import Staff

    url = api.feed_url("staff", staff[0]["id"])
    first, response = _get(api.client, url)
    etag = response.headers["ETag"]
    reads: list[int] = []
    lookup = feed_lookup(app.extensions["calsync"].engine.dialect)
    real_run, real_with = lookup.run, version._row_with
    monkeypatch.setattr(lookup, "run", lambda *a: reads.append(1) or real_run(*a))
    # PostgreSQL: the row read again by the render's first statement (feed.Ahead)
    monkeypatch.setattr(version, "_row_with", lambda *a: reads.append(1) or real_with(*a))
    # PostgreSQL: rows are kept while no change is heard (feed_changes.py, its own tests); the
    # notifications of the GET's own writes (its token's last-used time) may still be on their
    # way, so revalidate until one 304 needs no read: from then on nothing changes.
    if not sqlite_engine(app):
        wait_until(lambda: getattr(feed_changes(app.extensions["calsync"].engine), "listening", False),
                   "the feed change listener")

    def settled() -> bool:
        reads.clear()
        assert api.client.get(url, headers={"If-None-Match": etag}).status_code == 304
        return not reads

    assert api.client.get(url, headers={"If-None-Match": etag}).status_code == 304
    # That one may have read again: on SQLite the GET's segment and fragment were committed after
    # it; on PostgreSQL the GET's token's last-used time was.
    reads.clear()
    if not sqlite_engine(app):
        wait_until(settled, "a 304 that reads nothing", interval=0.05)
    for _ in range(3):
        assert api.client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert len(reads) == 0
    with app.extensions["calsync"].sessions.begin() as session:  # any commit, by another connection
        session.execute(update(Staff).where(Staff.id == staff[0]["id"])
                        .values(feed_revision=Staff.feed_revision + 1))
    changed = api.client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag and changed.data == first
    assert len(reads) == 1


def test_rendered_pieces_are_stored_without_waiting_for_the_disk_on_postgresql(
        app: Flask, postgres: Any, api: Api, staff: list[dict]) -> None:
    """The fragments and segment written after a response are caches: their commit does not
    wait for the WAL flush (synchronous_commit off, for that transaction only)."""
    from sqlalchemy import text

    from calsync.web import public_feeds

    seen: list[str] = []
    store = public_feeds._store

    def observed(sessions: Any, later: list) -> None:
        store(sessions, [lambda session: seen.append(session.scalar(text("SHOW synchronous_commit"))),
                         *later])

    url = api.feed_url("staff", staff[0]["id"])
    api.book(staff[0]["id"], iso(soon(2)), iso(soon(2, 11)))
    original = public_feeds._store
    public_feeds._store = observed
    try:
        _get(api.client, url)
    finally:
        public_feeds._store = original
    assert seen == ["off"]
    with app.extensions["calsync"].sessions() as session:
        assert session.scalar(text("SHOW synchronous_commit")) == "on"  # the pool's connections keep it
        assert session.scalar(select(FeedSegment.segment_key).limit(1)) is not None


def test_a_staff_edit_racing_a_booking_adds_to_the_revision_the_booking_wrote(
        app: Flask, postgres: Any, staff: list[dict]) -> None:
    """A staff edit bumps the feed revision in SQL, as a booking does: loaded before a booking
    committed, it still ends one past the booking's revision instead of writing the booking's
    own number again (two states under one revision would share a segment's key)."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from calsync.feeds.scheduling.directory import get_staff, update_staff
    from calsync.models import Company, Staff

    engine = app.extensions["calsync"].engine
    with Session(engine) as edit:
        company_id = edit.scalar(select(Staff.company_id).where(Staff.id == staff[0]["id"]))
        company = edit.get(Company, company_id)
        assert company is not None
        loaded = get_staff(edit, company, staff[0]["id"])  # kept: the session holds it as read
        before = loaded.feed_revision
        with engine.begin() as booking:  # another transaction's bump (booking._BUMP_STAFF's)
            booking.execute(update(Staff).where(Staff.id == staff[0]["id"])
                            .values(feed_revision=Staff.feed_revision + 1))
        update_staff(edit, company, staff[0]["id"], {"email": "edited@example.com"})
        edit.commit()
    with engine.connect() as conn:
        assert conn.scalar(select(Staff.feed_revision).where(Staff.id == staff[0]["id"])) == before + 2


def _round_trips(monkeypatch, postgres: Any) -> tuple[list[tuple[str, bool]], list[int], Any]:
    """Record what psycopg sends: each statement, with whether it went in a pipeline, and each
    pipeline (its statements are sent together and answered together: one round trip)."""
    raw = postgres.raw_connection()
    connection_class: Any = type(raw.dbapi_connection)
    cursor_class: Any = type(raw.dbapi_connection.cursor())
    raw.close()
    statements: list[tuple[str, bool]] = []
    pipelines: list[int] = []
    real_execute, real_pipeline = cursor_class.execute, connection_class.pipeline

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append((str(query), self.connection.info.pipeline_status != PipelineStatus.OFF))
        return real_execute(self, query, *args, **kwargs)

    def pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        pipelines.append(1)
        return real_pipeline(self, *args, **kwargs)

    def start() -> None:
        statements.clear()
        pipelines.clear()
        monkeypatch.setattr(cursor_class, "execute", counted)
        monkeypatch.setattr(connection_class, "pipeline", pipeline)

    def stop() -> None:
        monkeypatch.setattr(cursor_class, "execute", real_execute)
        monkeypatch.setattr(connection_class, "pipeline", real_pipeline)

    return statements, pipelines, (start, stop)


def test_the_first_get_after_a_move_waits_for_the_database_once(
        app: Flask, postgres: Any, api: Api, staff: list[dict], monkeypatch) -> None:
    """Each round trip to PostgreSQL before the client has its answer is time it waits: after
    one move the company feed reads the token's row and the staff with the changes since their
    kept segments (scope_changes.py) in one statement (feed.Ahead), and nothing else (the
    rendered pieces are written after the response). Before, these were two statements in one
    pipeline, before that two round trips, and before that three. A staff member whose kept
    segment has no appointments is asked about too: their first booking reads no more."""
    booked = _book_some(api, staff)
    with app.extensions["calsync"].sessions() as session:
        company_id = session.scalar(select(Appointment.company_id).limit(1))
    url = api.feed_url("company", company_id)
    _get(api.client, url)
    _get(api.client, url)
    statements, pipelines, (start, stop) = _round_trips(monkeypatch, postgres)
    newcomer = api.make_staff(name="New Member", email="new@example.com", working_hours=ALL_DAY)
    _get(api.client, url)  # the newcomer's segment: no appointments, kept all the same

    def move(day: int) -> Any:
        return api.patch(f"/appointments/{booked[0]['id']}",
                         {"start": iso(soon(day, 9)), "end": iso(soon(day, 10))})

    for change in (lambda: move(21), lambda: move(22),
                   lambda: api.book(newcomer["id"], iso(soon(23, 9)), iso(soon(23, 10)))):
        assert change().status_code in (200, 201)
        start()
        response = api.client.get(url)
        stop()
        assert response.status_code == 200
        during, piped = [q for q, _ in statements], [p for _, p in statements]
        response.close()  # the rendered pieces are stored now, after the answer
        assert len(during) == 1 and not any(piped) and not pipelines, statements
        assert "feed_token" in during[0] and "LATERAL" in during[0], during


def test_a_question_sent_ahead_that_the_render_would_not_ask_is_asked_again(
        settings: Settings, app: Flask, api: Api, staff: list[dict], monkeypatch) -> None:
    """The lookup sends the render's first statement with what the token's last feed asked
    (feed.Ahead). Showing cancelled appointments or not, a feed's segments are of two families,
    each kept at its own revision: once the setting is switched back, the answer sent ahead is
    about the other family's segments, and using it would miss the move made since this
    family's were kept. The render asks again, and the feed is that of a render from nothing."""
    booked = _book_some(api, staff)
    url = api.feed_url("staff", staff[0]["id"])
    postgres = app.extensions["calsync"].engine.dialect.name == "postgresql"
    _get(api.client, url)  # the segment without cancelled appointments, kept
    asked = _count(monkeypatch, scope_changes._STAFF_AND_CHANGES.values())
    used = _calls(monkeypatch, scope_changes, "split")

    def step(change: Any, what: str) -> tuple[int, int]:
        assert change().status_code == 200, what
        asked.clear()
        used.clear()
        body, _ = _get(api.client, url)
        assert body == _from_nothing(settings, app, url), what
        return len(asked), len(used)

    # Nothing kept of the new family: the staff rows are read alone.
    assert step(lambda: api.patch("/settings", {"show_cancelled": True}), "shown") == (0, 0)
    moved = step(lambda: api.patch(f"/appointments/{booked[2]['id']}",
                                   {"start": iso(soon(20, 9)), "end": iso(soon(20, 10))}), "moved")
    assert moved == ((0, 1) if postgres else (0, 0))  # PostgreSQL: answered with the token's row
    # Back to the first family, kept from before the move: asked again, with its own revision.
    hidden = step(lambda: api.patch("/settings", {"show_cancelled": False}), "hidden again")
    assert hidden == ((1, 1) if postgres else (0, 0))
    assert events_by_uid(_get(api.client, url)[0])[booked[2]["uid"]]["DTSTART"].dt == soon(20, 9)


def test_where_every_lookup_reads_a_304_sends_the_token_row_alone(
        settings: Settings, postgres: Any, api: Api, staff: list[dict], monkeypatch) -> None:
    """CALSYNC_FEED_LISTEN=false (behind PgBouncer): every lookup reads the token's row, most of
    them for a 304, so nothing is sent ahead with it (feed.Ahead would add a statement to each)."""
    booked = _book_some(api, staff)
    app = create_app(settings.model_copy(update={"feed_listen": False}), migrate=False)
    try:
        client = app.test_client()
        url = api.feed_url("staff", staff[0]["id"])
        _get(client, url)
        etag = _get(client, url)[1].headers["ETag"]
        statements, pipelines, (start, stop) = _round_trips(monkeypatch, postgres)
        start()
        response = client.get(url, headers={"If-None-Match": etag})
        stop()
        assert response.status_code == 304
        assert len(statements) == 1 and "feed_token" in statements[0][0] and not pipelines, statements
        assert api.patch(f"/appointments/{booked[0]['id']}",
                         {"start": iso(soon(20, 9)), "end": iso(soon(20, 10))}).status_code == 200
        assert _get(client, url)[0] == _from_nothing(settings, app, url)
    finally:
        app.extensions["calsync"].engine.dispose()


def test_the_token_row_read_with_the_staff_is_the_token_statements_own(
        app: Flask, postgres: Any, api: Api, staff: list[dict]) -> None:
    """The statement sent ahead reads the token's row too, making its revisions, staff count and
    latest change from a row per staff member (token_rows.token_row): for every kind of scope, an
    empty group and a deleted staff member's feed, the row is the token statement's, and its
    other rows are what the render's own statement would read. A token whose scope is not the
    one asked about (never, but for a row written by hand) is read on its own."""
    from calsync.feeds.accounts.keys import hash_token
    from calsync.feeds.publishing import version

    _book_some(api, staff)
    extra = api.make_staff(name="Leaving Soon", email="leaving@example.com", working_hours=ALL_DAY)
    both = api.post("/groups", {"name": "Both", "staff_ids": [s["id"] for s in staff]}).get_json()
    empty = api.post("/groups", {"name": "Nobody", "staff_ids": []}).get_json()
    with app.extensions["calsync"].sessions() as session:
        company_id = session.scalar(select(Appointment.company_id).limit(1))
    feeds = {"staff": api.feed_url("staff", staff[1]["id"]), "group": api.feed_url("group", both["id"]),
             "empty group": api.feed_url("group", empty["id"], "busy"),
             "company": api.feed_url("company", company_id, "limited"),
             "deleted staff": api.feed_url("staff", extra["id"])}
    assert api.delete(f"/staff/{extra['id']}").status_code in (200, 204)
    every = [s["id"] for s in staff]
    dialect = postgres.dialect
    raw = postgres.raw_connection()
    try:
        connection = raw.dbapi_connection
        connection.autocommit = True
        for what, url in feeds.items():
            digest = hash_token(url.removeprefix("/feeds/").removesuffix(".ics"))
            scope = what.split()[-1]
            own = feed_lookup(dialect).run(connection, digest)
            kept = {staff_id: 0 for staff_id in every}  # every appointment is a change since 0
            also = scope_changes.ahead(scope, own[5], company_id, "full", kept, what)
            assert version._row_with(connection, dialect, digest, also) == own, what
            with Reads(postgres, app.extensions["calsync"].sessions) as reads:
                asked = scope_changes._STAFF_AND_CHANGES[scope].all(
                    reads, **scope_changes._params(own[5], company_id, "full", kept))
            assert sorted(also.rows or [], key=repr) == sorted(asked, key=repr), what
            assert (own[-2] == 0) == (what in ("empty group", "deleted staff")), what
            other = scope_changes.ahead("company" if scope != "company" else "staff", own[5], company_id,
                                        "full", kept, what)
            assert version._row_with(connection, dialect, digest, other) == own and other.rows is None, what
    finally:
        raw.close()
