"""Engine and session factory. Nothing here runs at import time."""

from __future__ import annotations

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
    if url.startswith("postgresql"):
        # Timestamps come back in the session's time zone; in UTC they need no conversion
        # (models.base.UTCDateTime) whatever the server's default zone is. Added to any
        # options the URL already carries (e.g. a search_path).
        parsed = make_url(url)
        options = " ".join(filter(None, [str(parsed.query.get("options") or ""), "-c timezone=UTC"]))
        engine = create_engine(parsed.update_query_dict({"options": options}), **kwargs)
    else:
        engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine)
    return engine


# A pooled connection that was idle this long is tested before use. A server restart or
# failover takes longer than this, and proxies' idle timeouts are minutes, so a connection
# that was checked in before such an event is always tested; one back in use within a
# quarter of a second (every connection of a busy server) is not.
IDLE_PING_SECONDS = 0.25


def ping_when_idle(engine: Engine) -> None:
    """pool_pre_ping, but only for connections idle ≥ IDLE_PING_SECONDS: pinging every checkout
    was one extra round trip per request (a third of a 304 on PostgreSQL, issue 17) for
    connections that were in use a moment ago. A connection that dies while hot fails its
    request (a 503, web.errors), and SQLAlchemy then replaces every connection of the pool
    that is older than the failure, as with pre-ping."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_from = record.info.pop("idle_from", None)
        if idle_from is None or time.monotonic() - idle_from < IDLE_PING_SECONDS:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool's documented way to say "discard this one and connect anew".
            raise DisconnectionError("an idle pooled connection is gone") from exc


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
