"""Statements a feed request runs on every render after a change, compiled once per dialect and
run on a DBAPI connection (issue 17, docs/scale.md).

Building a statement, SQLAlchemy's execution context and its result rows cost more than the
SQLite queries of the first GET after a change. A `Prebuilt` keeps what SQLAlchemy would do
on each execution and does only the part that matters: its binds pass through their types'
bind processors and its columns through their result processors, so values are what a
Session would hand back (aware UTC datetimes, enum members, ...). Only statements that bind
plain values (no expanding IN) are prebuilt; everything else goes through `Reads.session`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from calsync.feeds.publishing.lookup_connections import Aside, lookup_connections


class _Form:
    """One statement compiled for one dialect."""

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.order = list(compiled.positiontup or [])
        processors: dict[str, Callable[[Any], Any] | None] = {
            name: bind.type._cached_bind_processor(dialect) for bind, name in compiled.bind_names.items()
        }
        self.binds = {name: fn for name, fn in processors.items() if fn is not None}
        # Literal values of the statement (a status, a variant): processed once.
        self.base = {}
        for name, value in compiled.construct_params(_check=False).items():
            fn = processors.get(name)
            self.base[name] = fn(value) if fn is not None and value is not None else value
        results = [c.type._cached_result_processor(dialect, None) for c in statement.selected_columns]
        # The columns that have a processor, by index: a few of many, and NULL in most rows of
        # an outer join (the staff without changes), so a row is looked at there only.
        self.results = [(i, fn) for i, fn in enumerate(results) if fn is not None]

    def params(self, given: dict[str, Any]) -> Any:
        values = dict(self.base)
        for name, value in given.items():
            if name in values:  # a value the statement does not bind (a scope's unused id) is left out
                fn = self.binds.get(name)
                values[name] = fn(value) if fn is not None and value is not None else value
        return tuple(values[name] for name in self.order) if self.positional else values


class Prebuilt:
    """`binary`: on PostgreSQL, results come in binary form. For a large bytea (a stored
    segment) the text form is hex, twice the bytes, decoded by the client: a 300 kB segment
    took ~2.8 ms to read that way against ~0.75 ms (issue 17, docs/scale.md). psycopg hands
    back the same Python values either way."""

    def __init__(self, statement: Any, *, binary: bool = False) -> None:
        self.statement = statement
        self.binary = binary
        self._forms: dict[tuple[str, str], _Form] = {}
        self._lock = threading.Lock()

    def form(self, dialect: Any) -> _Form:
        key = (dialect.name, dialect.driver)
        found = self._forms.get(key)
        if found is None:
            with self._lock:
                found = self._forms[key] = _Form(self.statement, dialect)
        return found

    def all(self, reads: Reads, **params: Any) -> list[tuple[Any, ...]]:
        form = self.form(reads.dialect)
        cursor = self.cursor(reads.dbapi, reads.dialect)
        try:
            cursor.execute(form.sql, form.params(params))
            rows: list[Any] = cursor.fetchall()
        finally:
            cursor.close()
        return self.processed(form, rows)

    def cursor(self, dbapi_connection: Any, dialect: Any) -> Any:
        binary = self.binary and dialect.name == "postgresql"
        return dbapi_connection.cursor(binary=True) if binary else dbapi_connection.cursor()

    @staticmethod
    def processed(form: _Form, rows: list[Any], start: int = 0) -> list[tuple[Any, ...]]:
        """The DBAPI's rows as a Session would hand them back, from their column `start` on."""
        if start:
            rows = [row[start:] for row in rows]
        processors = [(i - start, fn) for i, fn in form.results if i >= start]
        if not processors:
            return rows
        out: list[tuple[Any, ...]] = []
        for row in rows:
            values = None
            for i, fn in processors:
                value = row[i]
                if value is not None:
                    if values is None:
                        values = list(row)
                    values[i] = fn(value)
            out.append(row if values is None else tuple(values))
        return out

    def first(self, reads: Reads, **params: Any) -> tuple[Any, ...] | None:
        rows = self.all(reads, **params)
        return rows[0] if rows else None


@dataclass(eq=False)
class Prefetch:
    """A prebuilt statement sent ahead, in place of the feed lookup's own (version.lookup_feed
    on PostgreSQL): the read the render that will follow expects to make (feed.Ahead), which
    reads the token's row of a token of `scope` too (version._row_with). `key` says what it was
    asked for; the render uses `rows` (the columns after the token's) only if its own question
    has the same key, and asks again otherwise. `rows` stays None when not sent."""

    prebuilt: Prebuilt
    params: dict[str, Any]
    key: Any
    scope: str
    rows: list[tuple[Any, ...]] | None = None


class Reads:
    """What one render reads through: prebuilt statements on one DBAPI connection (one set aside
    for feed requests, lookup_connections.py, most likely the one the lookup just used, its pages
    still cached; else the pool's), and an ORM session opened only when a rare path needs one
    (a cold segment, writes made at once).

    Every statement reads what is committed when it runs, as in a Session (SQLite's driver
    starts no transaction for a SELECT; PostgreSQL reads committed data per statement). The
    set-aside connection only reads: what a render writes goes through `session` or `later`.
    """

    def __init__(self, engine: Engine, sessions: Callable[[], Session]) -> None:
        self.dialect = engine.dialect
        self._engine, self._sessions = engine, sessions
        self._stash = lookup_connections(engine)
        self._aside: Aside | None = None
        self._pooled: Any = None
        self._session: Session | None = None

    @property
    def dbapi(self) -> Any:
        if self._aside is not None:
            return self._aside.connection
        if self._pooled is None:
            if self._stash is not None:
                self._aside = self._stash.take()
                return self._aside.connection
            self._pooled = self._engine.raw_connection()
        return self._pooled.dbapi_connection

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._sessions()
        return self._session

    def close(self, failed: bool = False) -> None:
        if self._aside is not None:
            assert self._stash is not None
            if failed:
                self._stash.close(self._aside)  # perhaps broken: not handed to the next request
            else:
                self._stash.put_back(self._aside)
            self._aside = None
        if self._pooled is not None:
            self._pooled.close()  # the pool rolls back whatever the reads began
            self._pooled = None
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Reads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        self.close(failed=exc_type is not None)
