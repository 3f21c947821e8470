"""The unit tier needs no servers and no database files: a unit test that opens a SQLite file or
listens on a socket fails, naming the tier it belongs in (tests/integration)."""

from __future__ import annotations

import socket
import sqlite3
from typing import Any

import pytest

_real_sqlite_connect = sqlite3.connect
_real_listen = socket.socket.listen


def _memory_only(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
    name = str(database)
    if name != ":memory:" and not (name.startswith("file:") and "mode=memory" in name):
        raise AssertionError(
            f"a unit test opened the database file {name!r}: move it to tests/integration, "
            "or use sqlite:// (in memory)"
        )
    return _real_sqlite_connect(database, *args, **kwargs)


def _no_listening(self: socket.socket, *args: Any) -> None:
    raise AssertionError("a unit test started a server: move it to tests/integration")


@pytest.fixture(autouse=True)
def _unit_tier_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "connect", _memory_only)
    monkeypatch.setattr(socket.socket, "listen", _no_listening)
