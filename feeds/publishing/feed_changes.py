"""PostgreSQL: feed lookups answered from memory until a change is heard (LISTEN/NOTIFY).

Every feed request reads its token's row (version.py); on PostgreSQL that is a round trip, and
a 304 is little else, so it cost about a third of the 304 (issue 17, docs/scale.md). Triggers
announce every change to the rows that row is read from (models/feed_changes.py); one thread
per process and engine LISTENs on its own connection and marks the company changed. A row read
after the listening started stays the answer until its company (or everything) is marked.

Ordering, so a row is never reused once it is stale:
- a read notes `seq` BEFORE its query: a change heard while the query runs marks the company
  with a higher number, so the row is already stale when kept;
- losing the connection marks everything changed and stops reuse until LISTEN is back (a
  notification sent while nobody listened is gone);
- this process's own commits mark everything changed before and after the commit (the
  engine's commit event, then the connection's return to the pool), so a request that follows
  a write in this process never waits for the notification to come round.
A change committed by another process is reused for as long as its notification takes to
arrive (well under a millisecond on one machine): no longer than a read that started a moment
earlier would have been out of date.

Turned off (every lookup reads) when the schema has no triggers (a database not migrated to
0016), and by CALSYNC_FEED_LISTEN=false: behind a PgBouncer in transaction pooling mode, which
does not deliver notifications.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import QueuePool

from calsync.models.feed_changes import ROW_TRIGGER, TABLES, TRUNCATE_TRIGGER, channel_of

log = logging.getLogger("calsync.feeds")

KEEP_ROWS = 10_000  # token rows kept per process and engine; all dropped when more
WAIT = 1.0  # seconds the listener waits for a notification before checking it should stop
RETRY = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # reconnect back-off, seconds
APPLICATION_NAME = "calsync feed changes"


class FeedChanges:
    """The changes this process has heard of, and the token rows read since (by digest)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.seq = 0
        # A row read when seq was below reset_at is stale (read before a change to everything);
        # so is one read before its company's change (changed). None is fresh until listening.
        self.reset_at = 1
        self.changed: dict[int, int] = {}  # company id -> seq of its last heard change
        self.rows: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self.listening = False
        self._fd = -1  # the listening connection's socket
        self.backend_pid: int | None = None  # its server process (pg_stat_activity)
        self.disabled: str | None = None  # why rows are never reused, once known
        self.pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="calsync-feed-changes", daemon=True)
        self._thread.start()

    # --- the lookup's side -------------------------------------------------------------------

    def known(self, digest: str, company_column: int) -> tuple[Any, ...] | None:
        """The row read for `digest`, if nothing it shows can have changed since."""
        found = self.rows.get(digest)
        if found is None or not self.listening or self._unread():
            return None
        read_at, row = found
        if read_at < self.reset_at or self.changed.get(row[company_column], 0) > read_at:
            return None
        return row

    def _unread(self) -> bool:
        """A notification has arrived that the listener thread has not handled yet (it waits
        for the interpreter, up to a few ms while request threads are busy): treat it as a
        change to everything until then. One poll of the socket, no read."""
        fd = self._fd
        if fd < 0:
            return True
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def keep(self, digest: str, read_at: int, row: tuple[Any, ...]) -> None:
        """Remember a row read by a query that started at `read_at` (self.seq then)."""
        if not self.listening or read_at < self.reset_at:
            return
        if len(self.rows) >= KEEP_ROWS:
            self.rows.clear()
        self.rows[digest] = (read_at, row)

    # --- what marks rows stale ---------------------------------------------------------------

    def everything_changed(self) -> None:
        with self._lock:
            self.seq += 1
            self.reset_at = self.seq

    def company_changed(self, company_id: int) -> None:
        with self._lock:
            self.seq += 1
            self.changed[company_id] = self.seq
            if len(self.changed) > KEEP_ROWS:  # forget old marks by forgetting every row
                self.changed.clear()
                self.reset_at = self.seq

    def heard(self, payload: str) -> None:
        """A notification on this schema's channel: a company id, or "" for every company."""
        if payload.isdigit():
            self.company_changed(int(payload))
        else:
            self.everything_changed()

    def stop(self) -> None:
        self.listening = False
        self._stop.set()

    # --- the listener thread -----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                connection = self._connect()
            except Exception as exc:  # noqa: BLE001 - the database is down: try again later
                log.warning("feed change listener could not connect (%s)", type(exc).__name__)
                connection = False
            if connection is None:
                return  # the engine is gone, or this database cannot announce changes
            if connection is not False:
                failures = 0
                self._listen(connection)
            failures += 1
            self._stop.wait(RETRY[min(failures, len(RETRY)) - 1])

    def _listen(self, connection: Any) -> None:
        try:
            while not self._stop.is_set() and self._engine() is not None:
                for notify in connection.notifies(timeout=WAIT):
                    self.heard(notify.payload)
        except Exception as exc:  # noqa: BLE001 - any failure: stop reusing rows, reconnect
            if not self._stop.is_set():
                log.warning("feed change listener lost its connection (%s); reconnecting",
                            type(exc).__name__)
        finally:
            self.listening = False
            self._fd = -1
            self.backend_pid = None
            self.everything_changed()
            with contextlib.suppress(Exception):
                connection.close()
        if self._engine() is None:
            self._stop.set()

    def _connect(self) -> Any | None:
        """A connection of its own, LISTENing; None when there is nothing to listen for."""
        engine = self._engine()
        if engine is None:
            return None
        pooled = engine.raw_connection()
        connection: Any = pooled.dbapi_connection
        pooled.detach()  # ours for as long as it lives; the pool opens another when it needs one
        del engine, pooled
        try:
            connection.autocommit = True
            (oid,) = connection.execute(
                "SELECT to_regnamespace(quote_ident(current_schema()))::oid").fetchone()
            missing = _missing_triggers(connection, oid)
            if missing:
                self.disabled = f"no feed-change triggers on {', '.join(missing)} (migrate to head)"
                log.warning("feed lookups read the database every time: %s", self.disabled)
                connection.close()
                return None
            connection.execute(f"SET application_name = '{APPLICATION_NAME}'")
            connection.execute(f"LISTEN {channel_of(oid)}")
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        self._fd = connection.fileno()
        self.backend_pid = connection.info.backend_pid
        self.everything_changed()  # anything read before LISTEN may have missed a change
        self.listening = True
        return connection


def _missing_triggers(connection: Any, schema_oid: int) -> list[str]:
    found = {(name, table) for name, table in connection.execute(
        "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = %s AND t.tgname IN (%s, %s)",
        (schema_oid, ROW_TRIGGER, TRUNCATE_TRIGGER)).fetchall()}
    return [t for t in TABLES if {(ROW_TRIGGER, t), (TRUNCATE_TRIGGER, t)} - found]


_UNSET: Any = object()
_by_engine: weakref.WeakKeyDictionary[Engine, FeedChanges | None] = weakref.WeakKeyDictionary()
_by_engine_lock = threading.Lock()


def feed_changes(engine: Engine) -> FeedChanges | None:
    """The engine's listener in this process, started on first use; None where there is none
    (not PostgreSQL, a pool that is not a QueuePool, or a schema without the triggers)."""
    found = _by_engine.get(engine, _UNSET)
    if found is None or (isinstance(found, FeedChanges) and found.pid == os.getpid()):
        return None if found is None or found.disabled else found
    with _by_engine_lock:
        found = _by_engine.get(engine, _UNSET)
        if isinstance(found, FeedChanges) and found.pid == os.getpid() or found is None:
            return found
        # First use, or the first after a fork (the parent's thread does not run here).
        eligible = engine.dialect.name == "postgresql" and isinstance(engine.pool, QueuePool)
        made = FeedChanges(engine) if eligible else None
        if made is not None:
            _watch(engine, made)
        _by_engine[engine] = made
        return made


# An execution option of a Connection whose transaction writes only tables no token row is
# read from (the rendered fragments and segments web/public_feeds.py stores after answering):
# its commit marks nothing, so the token rows this process keeps stay in use. An execution
# option lives with the Connection, never with the pooled DBAPI connection, so it cannot carry
# over to the next transaction that borrows it.
CACHE_ONLY = "calsync_cache_only"


def _watch(engine: Engine, changes: FeedChanges) -> None:
    """This process's own commits mark everything changed, before and after the commit (but
    those of CACHE_ONLY connections)."""

    def committing(conn: Any) -> None:
        if conn.get_execution_options().get(CACHE_ONLY):
            return
        changes.everything_changed()
        conn.info["calsync_feed_commit"] = True

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop("calsync_feed_commit", None):
            changes.everything_changed()

    def disposed(_engine: Engine) -> None:
        # Rows read through the old pool are dropped with the listener; the next lookup
        # starts a new one (the engine's pool was replaced, with its events).
        changes.stop()
        for target, name, fn in hooks:
            with contextlib.suppress(Exception):
                event.remove(target, name, fn)
        with _by_engine_lock:
            if _by_engine.get(_engine) is changes:
                del _by_engine[_engine]

    hooks: list[tuple[Any, str, Callable[..., None]]] = [
        (engine, "commit", committing), (engine.pool, "checkin", checked_in)]
    for target, name, fn in hooks:
        event.listen(target, name, fn)
    # Not removed by `disposed` itself (a listener list cannot change while it is being called):
    # a later one finds another listener in the registry and leaves it alone.
    event.listen(engine, "engine_disposed", disposed)
