"""Engine and session factory. Nothing here runs at import time."""

from __future__ import annotations

import select
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout.

    WAL lets feed readers proceed while a booking writes; the busy timeout makes a second
    writer wait for the first instead of failing at once.
    """
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", 30)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    ping_idle = "pool_pre_ping" not in kwargs
    if url.startswith("postgresql"):
        # Timestamps come back in the session's time zone; in UTC they need no conversion
        # (models.base.UTCDateTime) whatever the server's default zone is. Added to any
        # options the URL already carries (e.g. a search_path).
        parsed = make_url(url)
        options = " ".join(filter(None, [str(parsed.query.get("options") or ""), "-c timezone=UTC"]))
        engine = create_engine(parsed.update_query_dict({"options": options}), **kwargs)
    else:
        engine = create_engine(url, **kwargs)
    if ping_idle:
        ping_idle_connections(engine)
    return engine


# A connection back in the pool for longer than this is pinged before use, whatever its socket says.
PING_AFTER_IDLE_SECONDS = 10.0


def ping_idle_connections(engine: Engine, idle: float = PING_AFTER_IDLE_SECONDS) -> None:
    """pool_pre_ping, for connections that may have died: the pool's own pre-ping is a round
    trip on every checkout, one more per request on PostgreSQL than the request's own
    statements (issue 17: a tenth of a feed request's time). A connection is pinged when its
    socket has something to read, which an idle PostgreSQL connection never has unless the
    server ended it (a restart or pg_terminate_backend sends the termination message and
    closes the socket: seen without a round trip), or when it sat in the pool longer than
    `idle` (a connection dropped silently on the way, by a firewall say). A failed ping makes
    the pool drop the connection and take another, as pre-ping does (SQLAlchemy's pessimistic
    disconnect handling with the checkout event)."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _idle(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_needed(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle and not _readable(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool drops this connection and checks out another (or connects anew).
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc


def _readable(dbapi_conn: Any) -> bool:
    """Whether the connection's socket has bytes (or its end) waiting, without reading them."""
    try:
        fileno = dbapi_conn.fileno()
    except Exception:  # closed, or a driver without a socket: let the ping decide
        return True
    try:
        ready, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
