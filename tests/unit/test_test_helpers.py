"""The test suite's own helpers: the unit tier's guard and the shared wait."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from tests.waiting import wait_until


def test_a_unit_test_cannot_open_a_database_file(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="move it to tests/integration"):
        sqlite3.connect(tmp_path / "unit.sqlite3")
    assert not (tmp_path / "unit.sqlite3").exists()
    sqlite3.connect(":memory:").close()  # in memory is fine


def test_a_unit_test_cannot_start_a_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(AssertionError, match="started a server"):
            sock.listen()


def test_wait_until_returns_the_first_true_value() -> None:
    answers = iter([None, 0, "ready"])
    assert wait_until(lambda: next(answers), interval=0) == "ready"


def test_wait_until_fails_naming_what_it_waited_for() -> None:
    state = {"sent": 1}
    with pytest.raises(AssertionError, match=r"gave up after 0.01 s waiting for two emails: \{'sent': 1\}"):
        wait_until(lambda: state["sent"] == 2, lambda: f"two emails: {state}", limit=0.01, interval=0)
