"""DBAPI connections set aside for the feed lookup, the one query of every feed request.

A 304 is the lookup and little else, and taking a connection from SQLAlchemy's pool and giving
it back (its proxy, reset and finalizer) cost about half as much as the query itself (issue 17,
docs/scale.md). These connections are opened through the pool (its connect events apply:
SQLite's PRAGMAs) and then detached from it: a thread takes one and puts it back, nothing
more. On PostgreSQL they read in autocommit mode, so a lookup is one round trip (no pre-ping,
BEGIN or ROLLBACK); a broken one is closed and the caller reads through the pool instead. On
SQLite a lookup whose token row was read on the same connection since anything was last
committed reuses that row (Aside).

At most one per thread that answers feed requests at the same moment, beside the pool's own
(PostgreSQL's max_connections must allow for them). Closed when the engine is disposed; after
a fork the child drops its parent's without closing them (as engine.dispose(close=False)).
Only for pools that hand out interchangeable connections (QueuePool): an in-memory SQLite
database lives in its one connection, so such engines use the pool.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import QueuePool

KEEP = 16  # idle connections kept per engine and process; more are closed when put back


class Aside:
    """A connection set aside, and what it read last per token digest (SQLite: `rows`).

    SQLite's `PRAGMA data_version` changes when another connection commits anything to the
    database, and these connections only ever read: a row read on one is still the row while
    its data_version stays the same (version._row asks for it first, then reads)."""

    __slots__ = ("connection", "generation", "rows")

    def __init__(self, connection: Any, generation: int, versioned: bool) -> None:
        self.connection, self.generation = connection, generation
        self.rows: dict[str, tuple[int, tuple[Any, ...]]] | None = {} if versioned else None


class LookupConnections:
    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._autocommit = engine.dialect.name == "postgresql"
        self._versioned = engine.dialect.name == "sqlite"
        self._idle: list[Aside] = []
        self._pid = os.getpid()
        self._generation = 0
        self._lock = threading.Lock()
        event.listen(engine, "engine_disposed", self._disposed)

    def take(self) -> Aside:
        """A connection for one lookup: give it back with put_back, or drop it with close."""
        if self._pid != os.getpid():
            self._forked()
        try:
            return self._idle.pop()
        except IndexError:
            pass
        engine = self._engine()
        assert engine is not None
        generation = self._generation
        pooled = engine.raw_connection()
        dbapi_connection: Any = pooled.dbapi_connection
        pooled.detach()  # ours now: the pool opens another when it needs one
        if self._autocommit:
            dbapi_connection.autocommit = True
        return Aside(dbapi_connection, generation, self._versioned)

    def put_back(self, aside: Aside) -> None:
        if aside.generation == self._generation and self._pid == os.getpid() and len(self._idle) < KEEP:
            self._idle.append(aside)
        else:
            self.close(aside)

    def close(self, aside: Aside) -> None:
        if self._pid != os.getpid():
            return  # the parent's: closing it here would end the parent's session
        with contextlib.suppress(Exception):  # a broken connection may fail to close: gone either way
            aside.connection.close()

    def _disposed(self, _engine: Engine) -> None:
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for aside in idle:
            self.close(aside)

    def _forked(self) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
                self._generation += 1


_by_engine: weakref.WeakKeyDictionary[Engine, LookupConnections | None] = weakref.WeakKeyDictionary()
_by_engine_lock = threading.Lock()


def lookup_connections(engine: Engine) -> LookupConnections | None:
    """The engine's set-aside connections, or None where its pool must be used."""
    try:
        return _by_engine[engine]
    except KeyError:
        pass
    with _by_engine_lock:
        if engine not in _by_engine:
            _by_engine[engine] = LookupConnections(engine) if isinstance(engine.pool, QueuePool) else None
        return _by_engine[engine]
