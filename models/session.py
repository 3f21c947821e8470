"""Engine and session factory. Nothing here runs at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
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
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql"):
        # Timestamps come back in the session's time zone; in UTC they need no conversion
        # (models.base.UTCDateTime) whatever the server's default zone is. Added to any
        # options the URL already carries (e.g. a search_path).
        parsed = make_url(url)
        options = " ".join(filter(None, [str(parsed.query.get("options") or ""), "-c timezone=UTC"]))
        return create_engine(parsed.update_query_dict({"options": options}), **kwargs)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
