"""PostgreSQL: feed versions kept in memory and changes heard by LISTEN/NOTIFY (issue 17, 304s).

A lookup reuses the token row it read while no change to its company was announced, so these
tests change rows on a connection of their own: with the triggers on (as any writer would)
the next request must see the change; with them off (`session_replication_role = replica`, a
change nobody announces) the feed keeps its old version, which is how a test can tell that the
row was reused rather than read again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from calsync.feeds.publishing import feed_changes as changes_module
from calsync.feeds.publishing.feed_changes import feed_changes
from calsync.feeds.settings import Settings
from calsync.models import make_engine
from calsync.web import create_app
from tests.conftest import Api
from tests.feed_helpers import ALL_DAY, iso, soon
from tests.waiting import wait_until

BUMP = "UPDATE staff SET feed_revision = feed_revision + 1 WHERE id = %s"  # what a booking does


@pytest.fixture
def other(postgres: Engine, database_url: str) -> Iterator[Callable[..., None]]:
    """Run SQL as another process would: its own connection, autocommit; `silent=True` with
    the triggers off, so nothing announces the change."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    conn = psycopg.connect(url, autocommit=True)

    def run(sql: str, *params: Any, silent: bool = False) -> None:
        if silent:
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
                conn.execute(sql, params)
        else:
            conn.execute(sql, params)

    yield run
    conn.close()


@pytest.fixture
def feed(postgres: Engine, api: Api) -> dict[str, Any]:
    staff = api.make_staff(working_hours=ALL_DAY)
    booked = api.book(staff["id"], iso(soon(1, 9)), iso(soon(1, 10)))
    assert booked.status_code == 201, booked.get_json()
    _listening(postgres)
    return {"staff": staff, "appointment": booked.get_json(), "url": api.feed_url("staff", staff["id"])}


def _etag(client: FlaskClient, url: str) -> str | None:
    response = client.get(url)
    response.close()
    return response.headers.get("ETag") if response.status_code == 200 else None


def _listening(engine: Engine) -> None:
    wait_until(lambda: (changes := feed_changes(engine)) is not None and changes.listening,
               "the feed change listener", interval=0.01)


def test_a_row_is_reused_until_a_change_is_announced(client: FlaskClient, feed: dict, other: Any) -> None:
    first = _etag(client, feed["url"])
    assert _etag(client, feed["url"]) == first
    other(BUMP, feed["staff"]["id"], silent=True)
    assert _etag(client, feed["url"]) == first  # not read again: nobody said it changed
    revalidated = client.get(feed["url"], headers={"If-None-Match": first})
    assert revalidated.status_code == 304
    other(BUMP, feed["staff"]["id"])
    wait_until(lambda: _etag(client, feed["url"]) != first, interval=0.01)
    assert client.get(feed["url"], headers={"If-None-Match": first}).status_code == 200


@pytest.mark.parametrize("change", ["company", "token", "delete staff", "truncate"])
def test_every_table_the_version_reads_announces_its_changes(
        client: FlaskClient, feed: dict, other: Any, change: str) -> None:
    first = _etag(client, feed["url"])
    assert first is not None
    staff_id = feed["staff"]["id"]
    if change == "company":
        other("UPDATE company SET feed_epoch = feed_epoch + 1")
    elif change == "token":
        other("UPDATE feed_token SET revoked_at = now()")
    elif change == "delete staff":
        other("DELETE FROM staff WHERE id = %s", staff_id)
    else:
        other("TRUNCATE feed_token CASCADE")
    wait_until(lambda: _etag(client, feed["url"]) != first, interval=0.01)
    if change != "company":
        assert _etag(client, feed["url"]) is None  # 404: the feed is gone


def test_group_membership_changes_are_announced(client: FlaskClient, api: Api, postgres: Engine,
                                                other: Any) -> None:
    members = [api.make_staff(name=f"S{i}", email=f"s{i}@example.com", working_hours=ALL_DAY)
               for i in range(2)]
    group = api.post("/groups", {"name": "Front desk", "staff_ids": [members[0]["id"]]}).get_json()
    url = api.feed_url("group", group["id"])
    _listening(postgres)
    first = _etag(client, url)
    other("INSERT INTO group_member (group_id, staff_id) VALUES (%s, %s)", group["id"], members[1]["id"])
    wait_until(lambda: _etag(client, url) != first, interval=0.01)
    second = _etag(client, url)
    other("DELETE FROM group_member WHERE staff_id = %s", members[1]["id"])
    wait_until(lambda: _etag(client, url) == first, interval=0.01)
    assert second != first


def test_this_process_sees_its_own_change_without_the_notification(
        client: FlaskClient, api: Api, feed: dict, postgres: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit itself marks every row stale: a PATCH followed at once by a GET never waits
    for the notification to come round (here it never comes: the listener is deaf)."""
    first = _etag(client, feed["url"])
    monkeypatch.setattr(changes_module.FeedChanges, "heard", lambda self, payload: None)
    monkeypatch.setattr(changes_module.FeedChanges, "_unread", lambda self: False)
    assert _etag(client, feed["url"]) == first
    moved = api.patch(f"/appointments/{feed['appointment']['id']}",
                      {"start": iso(soon(1, 11)), "end": iso(soon(1, 12))})
    assert moved.status_code == 200, moved.get_json()
    assert _etag(client, feed["url"]) != first


def test_storing_rendered_pieces_leaves_every_kept_row_in_use(
        app: Flask, feed: dict, postgres: Engine) -> None:
    """The fragments and segment a render writes once it has answered change no feed's version,
    so their commit marks nothing (feed_changes.CACHE_ONLY): another feed's next 304 still
    needs no round trip. Every other commit of this process marks every row, and the mark-free
    option never carries over to the next transaction on the same pooled connection."""
    from sqlalchemy import text

    from calsync.feeds.publishing.cache import store_segment
    from calsync.web import public_feeds

    changes = feed_changes(postgres)
    assert changes is not None
    sessions = app.extensions["calsync"].sessions
    staff_id = feed["staff"]["id"]

    def write(session: Any) -> None:
        store_segment(session, f"test:{staff_id}:r1", f"test:{staff_id}", staff_id, b"BEGIN:VEVENT\r\n")

    before = changes.reset_at
    public_feeds._store(sessions, [write])
    assert changes.reset_at == before
    with sessions.begin() as session:  # the same writes, committed as any other transaction
        write(session)
    assert changes.reset_at > before
    before = changes.reset_at
    public_feeds._store(sessions, [write])
    with sessions.begin() as session:  # a real change next, most likely on the same connection
        session.execute(text(BUMP.replace("%s", ":id")), {"id": staff_id})
    assert changes.reset_at > before


def test_a_lost_listener_stops_reuse_until_it_listens_again(
        client: FlaskClient, feed: dict, postgres: Engine, other: Any) -> None:
    changes = feed_changes(postgres)
    assert changes is not None and changes.backend_pid
    first = _etag(client, feed["url"])
    lost = changes.backend_pid
    other("SELECT pg_terminate_backend(%s)", lost)
    # Announced by nobody, and the listener is gone: still seen at once.
    other(BUMP, feed["staff"]["id"], silent=True)
    second = _etag(client, feed["url"])
    assert second != first
    wait_until(lambda: changes.listening and changes.backend_pid not in (None, lost), interval=0.01)
    assert _etag(client, feed["url"]) == second
    other(BUMP, feed["staff"]["id"], silent=True)
    assert _etag(client, feed["url"]) == second  # reused again once listening


def _silent_change_is_seen(app: Flask, api: Api, other: Any) -> None:
    client = app.test_client()
    staff = api.make_staff(working_hours=ALL_DAY)
    url = api.feed_url("staff", staff["id"])
    first = _etag(client, url)
    assert _etag(client, url) == first
    other(BUMP, staff["id"], silent=True)
    assert _etag(client, url) != first  # read every time


def test_turned_off_every_lookup_reads(settings: Settings, postgres: Engine, api: Api, other: Any) -> None:
    app = create_app(settings.model_copy(update={"feed_listen": False}), migrate=False)
    try:
        _silent_change_is_seen(app, api, other)
    finally:
        app.extensions["calsync"].engine.dispose()


def test_without_the_triggers_every_lookup_reads(settings: Settings, postgres: Engine, api: Api,
                                                 other: Any) -> None:
    other("DROP FUNCTION calsync_feed_changed() CASCADE")
    app = create_app(settings, migrate=False)
    engine = app.extensions["calsync"].engine
    try:
        changes = feed_changes(engine)
        assert changes is not None
        wait_until(lambda: changes.disabled is not None, interval=0.01)
        assert "staff" in (changes.disabled or "")
        assert feed_changes(engine) is None
        _silent_change_is_seen(app, api, other)
    finally:
        engine.dispose()


def test_the_migrations_make_the_triggers(empty_database_url: str) -> None:
    if not empty_database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only: SQLite has no NOTIFY")
    from calsync.migrations import upgrade_database

    engine = make_engine(empty_database_url)
    try:
        upgrade_database(engine)
        raw = engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            oid = driver.execute("SELECT to_regnamespace(quote_ident(current_schema()))::oid").fetchone()[0]
            assert changes_module._missing_triggers(driver, oid) == []
        finally:
            raw.close()
    finally:
        engine.dispose()
