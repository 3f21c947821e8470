"""The pool pings a PostgreSQL connection only when it may have died (models/session.py
ping_idle_connections): not one that came back a moment ago, but one the server ended (its
socket says so) or one that sat idle too long. The restart itself is tests/system/test_faults.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from calsync.models import make_engine
from calsync.models.session import ping_idle_connections
from tests.waiting import wait_until


@pytest.fixture
def pinged(postgres: Engine) -> Iterator[tuple[Engine, list[int]]]:
    """An engine of its own on the test database, its pings counted."""
    engine = make_engine(postgres.url.render_as_string(hide_password=False), pool_size=1, max_overflow=0)
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        pings.append(1)
        return real(dbapi_conn)

    engine.dialect.do_ping = counted  # type: ignore[method-assign]
    yield engine, pings
    engine.dispose()


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_connection_back_a_moment_ago_is_used_without_a_round_trip(
    pinged: tuple[Engine, list[int]],
) -> None:
    engine, pings = pinged
    first = _backend(engine)
    for _ in range(5):
        assert _backend(engine) == first
    assert pings == []


def test_a_connection_the_server_ended_is_replaced_before_use(
    pinged: tuple[Engine, list[int]], postgres: Engine
) -> None:
    engine, pings = pinged
    lost = _backend(engine)
    with postgres.connect() as other:
        assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": lost}).scalar_one()
    # What the server sends when it ends a backend reaches the pooled socket shortly after.
    record = engine.pool._pool.queue[0]  # type: ignore[attr-defined]
    wait_until(lambda: _socket_readable(record))
    replacement = _backend(engine)  # no error: the ping failed, the pool connected anew
    assert replacement != lost
    assert pings == [1]


def test_a_connection_idle_too_long_is_pinged(postgres: Engine) -> None:
    engine = make_engine(postgres.url.render_as_string(hide_password=False), pool_pre_ping=False,
                         pool_size=1, max_overflow=0)
    pings: list[int] = []
    real = engine.dialect.do_ping
    engine.dialect.do_ping = lambda c: (pings.append(1), real(c))[1]  # type: ignore[method-assign]
    ping_idle_connections(engine, idle=0.0)  # everything counts as idle too long
    try:
        first = _backend(engine)
        assert _backend(engine) == first
        assert pings == [1, 1]
    finally:
        engine.dispose()


def _socket_readable(record: Any) -> bool:
    from calsync.models.session import _readable

    return _readable(record.dbapi_connection)
